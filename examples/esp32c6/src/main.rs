//! Relay on an ESP32-C6: the device loop of `relay-embedded` (the core's
//! machine, the wasmi registry) on the flash journal, reached over Wi-Fi
//! and MQTT.
//!
//! Boot order, and why:
//! 1. heap, scheduler, Wi-Fi and DHCP (esp-hal, esp-rtos, esp-radio,
//!    embassy-net);
//! 2. the clock from SNTP ([`clock`]): the journal holds absolute times, so
//!    nothing is replayed before the device knows what time it is;
//! 3. the journal from its flash partition ([`storage`]) and the plugin
//!    built into the image, loaded on wasmi, with the updates installed over
//!    the air since (`relay_embedded::updates`, in the `relay_upd`
//!    partition, when the build trusts a key);
//! 4. the MQTT session (`relay-embedded-mqtt`, the one the emulated
//!    device runs against a real broker), which runs the device loop.
//!
//! Everything that decides is the same code as on Linux and in the emulated
//! device (`device/qemu`); this crate only wires the board to it.

#![no_std]
#![no_main]

extern crate alloc;

mod clock;
mod settings;
mod storage;

use alloc::boxed::Box;
use embassy_executor::Spawner;
use embassy_net::{Runner, StackResources};
use embassy_time::{Duration, Timer};
use esp_backtrace as _;
use esp_hal::clock::CpuClock;
use esp_hal::ram;
use esp_hal::rng::Rng;
use esp_hal::timer::timg::TimerGroup;
use esp_println::println;
use esp_radio::wifi::sta::StationConfig;
use esp_radio::wifi::{
    AuthenticationMethodConfig, Config, ControllerConfig, Interface, WifiController,
};
use relay_core::host_env::{HostEnv, MemKv};
use relay_core::limits::Limits;
use relay_core::machine::MachineOptions;
use relay_core::ota::verify::TrustedKeys;
use relay_core::plugin::LogLevel;
use relay_embedded::updates::{UpdateOptions, Updater};
use relay_embedded::Device;
use relay_embedded_mqtt::{Board, Session, SessionConfig};
use static_cell::StaticCell;

use crate::settings::Settings;

esp_bootloader_esp_idf::esp_app_desc!();

/// The plugin built into this image (`RELAY_PLUGIN` at build time; the
/// echo plugin by default).
static PLUGIN: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/plugin.wasm"));

static SETTINGS: Settings = Settings::from_build();
static RESOURCES: StaticCell<StackResources<4>> = StaticCell::new();

#[esp_hal::main]
async fn main(spawner: Spawner) -> ! {
    let peripherals = esp_hal::init(esp_hal::Config::default().with_cpu_clock(CpuClock::max()));
    esp_alloc::heap_allocator!(#[ram(reclaimed)] size: 64 * 1024);
    esp_alloc::heap_allocator!(size: settings::HEAP);
    let timg0 = TimerGroup::new(peripherals.TIMG0);
    esp_rtos::start(timg0.timer0, peripherals.FROM_CPU_INTR0);

    println!(
        "relay: device {} (relay-core on ESP32-C6, wasmi)",
        SETTINGS.device
    );
    if let Some(problem) = SETTINGS.problem() {
        halt(problem).await;
    }

    let station = Config::Station(
        StationConfig::default()
            .with_ssid(
                SETTINGS
                    .ssid
                    .try_into()
                    .expect("an SSID of at most 32 bytes"),
            )
            .with_authentication(AuthenticationMethodConfig::Wpa2Personal(
                SETTINGS
                    .password
                    .try_into()
                    .expect("a password of at most 64 bytes"),
            )),
    );
    let interface = Interface::station();
    let controller = match WifiController::new(
        peripherals.WIFI,
        ControllerConfig::default().with_initial_config(station),
    ) {
        Ok(controller) => controller,
        Err(e) => {
            println!("relay: Wi-Fi does not start: {e:?}");
            halt("Wi-Fi failed").await
        }
    };
    let rng = Rng::new();
    let seed = (u64::from(rng.random()) << 32) | u64::from(rng.random());
    let (stack, runner) = embassy_net::new(
        interface,
        embassy_net::Config::dhcpv4(Default::default()),
        RESOURCES.init(StackResources::new()),
        seed,
    );
    spawner.spawn(wifi(controller).expect("one Wi-Fi task"));
    spawner.spawn(network(runner).expect("one network task"));
    stack.wait_config_up().await;
    if let Some(config) = stack.config_v4() {
        println!("relay: address {}", config.address);
    }

    clock::sync(stack, SETTINGS.ntp).await;
    let boot = clock::now_ms();

    let (journal, updates) = match storage::open(peripherals.FLASH) {
        Ok(opened) => opened,
        Err(e) => {
            println!("relay: {e}");
            halt("no journal").await
        }
    };
    let (mut registry, factory) = match relay_embedded::plugins::firmware(
        &[PLUGIN],
        &Limits::default(),
        || clock::UnixClock,
        || PrintLogger,
    ) {
        Ok(loaded) => loaded,
        Err(e) => {
            println!("relay: {e}");
            halt("the built-in plugin does not load").await
        }
    };
    let updater = match (updates, trust()) {
        (Some((flash, layout)), Some(trust)) => {
            let options = UpdateOptions {
                trust,
                max_bundle_bytes: u64::from(layout.region_bytes) - 4096,
                trial_commands: 3,
                host_version: env!("CARGO_PKG_VERSION"),
            };
            let make_env = Box::new(|info: &relay_core::plugin::PluginInfo| {
                HostEnv::new(
                    info.name.clone(),
                    Box::new(MemKv::default()),
                    Box::new(clock::UnixClock),
                    Box::new(PrintLogger),
                    &Limits::default(),
                )
            });
            let engine = Box::new(relay_embedded::plugins::engine());
            let opened = Updater::open(
                flash,
                layout,
                options,
                engine,
                Limits::default(),
                make_env,
                factory,
                &mut registry,
            );
            match opened {
                Ok(updater) => Some(updater),
                Err(e) => {
                    println!("relay: the update partition does not open ({e}); updates off");
                    None
                }
            }
        }
        _ => {
            println!("relay: no `relay_upd` partition or no RELAY_TRUSTED_KEY: updates off");
            None
        }
    };
    let (device, restored) = match Device::open(
        journal,
        registry,
        relay_embedded::policy(),
        MachineOptions::default(),
        boot,
    ) {
        Ok(opened) => opened,
        Err(e) => {
            println!("relay: the journal does not replay: {e}");
            halt("no journal").await
        }
    };
    let device = match updater {
        Some(updater) => device.with_updates(Box::new(updater)),
        None => device,
    };
    println!(
        "relay: journal replayed: {:?}, {} undecodable; {}",
        restored.report,
        restored.undecodable,
        device.describe()
    );
    let (broker_host, broker_port) = SETTINGS.broker_host_port();
    let config = SessionConfig {
        broker_host,
        broker_port,
        device: SETTINGS.device,
        prefix: SETTINGS.prefix,
    };
    Session::new(stack, config, Esp32c6, device, boot)
        .run()
        .await
}

/// The key update bundles must be signed with (`RELAY_TRUSTED_KEY`).
fn trust() -> Option<TrustedKeys> {
    let key: [u8; 32] = relay_core::ota::bundle::unhex(SETTINGS.trusted_key)?
        .try_into()
        .ok()?;
    let mut trust = TrustedKeys::new();
    trust.trust(&key).ok()?;
    Some(trust)
}

/// Keeps the station connected.
#[embassy_executor::task]
async fn wifi(mut controller: WifiController<'static>) {
    loop {
        match controller.connect_async().await {
            Ok(info) => {
                println!("relay: Wi-Fi connected to {:?}", info.ssid);
                let gone = controller.wait_for_disconnect_async().await;
                println!("relay: Wi-Fi disconnected: {gone:?}");
            }
            Err(e) => println!("relay: Wi-Fi does not connect: {e:?}"),
        }
        Timer::after(Duration::from_secs(5)).await;
    }
}

#[embassy_executor::task]
async fn network(mut runner: Runner<'static, Interface>) {
    runner.run().await
}

/// The board as the MQTT session sees it.
struct Esp32c6;

impl Board for Esp32c6 {
    fn now_ms(&self) -> u64 {
        clock::now_ms()
    }

    fn log(&self, line: core::fmt::Arguments<'_>) {
        println!("{line}");
    }

    fn restart(&self) -> ! {
        esp_hal::system::software_reset()
    }
}

/// Plugin log lines on the serial console.
struct PrintLogger;

impl relay_core::host_env::Logger for PrintLogger {
    fn log(&mut self, plugin: &str, level: LogLevel, message: &str) {
        println!("plugin {plugin} [{level:?}]: {message}");
    }
}

/// Says why the device cannot run, every 10 s, forever.
async fn halt(why: &str) -> ! {
    loop {
        println!("relay: stopped: {why}");
        Timer::after(Duration::from_secs(10)).await;
    }
}
