//! The emulated device on a network: the same core, flash journal, device
//! loop, wasmi plugins and MQTT session (`relay-embedded-mqtt`) as the
//! ESP32-C6 firmware, with QEMU's virtio-net card and user networking in
//! place of Wi-Fi. A real broker on the host's loopback reaches it, and
//! `relay send --wait` talks to it like to any device (`cargo xtask qemu`
//! runs that end to end).
//!
//! Settings come from QEMU's command line (`-append`, read by
//! [`BootArgs`](relay_qemu::boot_args::BootArgs)): `broker=HOST:PORT` (the
//! host's loopback is 10.0.2.2 from inside user networking) and
//! `device=ID`, and optionally `journal=PATH` (a 64 KiB host file, erased
//! to `0xff`, that holds the journal across restarts of QEMU; QEMU needs
//! `-semihosting-config enable=on`) and `updates=PATH trust=HEX` (the
//! update partition, a host file of [`UPDATES`]' size erased to `0xff`, and
//! the public key bundles must be signed with: plugin updates over the air,
//! `relay_embedded::updates`). The address is QEMU user networking's usual
//! static one, 10.0.2.15/24.
//! The executor is `embassy_futures::block_on`: one task, polled without
//! interrupts, which is all a device loop and a TCP/IP stack need here.

#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod device {
    extern crate alloc;

    use alloc::boxed::Box;
    use alloc::collections::BTreeMap;
    use alloc::string::String;

    use embassy_futures::block_on;
    use embassy_futures::select::{select, Either};
    use embassy_net::{Ipv4Address, Ipv4Cidr, Runner, Stack, StackResources, StaticConfigV4};
    use embedded_storage::nor_flash::NorFlash;
    use relay_core::host_env::Clock;
    use relay_core::host_env::{HostEnv, MemKv};
    use relay_core::limits::Limits;
    use relay_core::machine::MachineOptions;
    use relay_core::ota::verify::TrustedKeys;
    use relay_core::plugin::LogLevel;
    use relay_core::registry::Registry;
    use relay_embedded::updates::{Layout, UpdateOptions, Updater};
    use relay_embedded::{plugins, Device};
    use relay_embedded_mqtt::{Board, Session, SessionConfig};
    use relay_flash::ram::RamFlash;
    use relay_flash::FlashLog;
    use relay_qemu::board::exit;
    use relay_qemu::boot_args::BootArgs;
    use relay_qemu::file_flash::FileFlash;
    use relay_qemu::heap::HEAP;
    use relay_qemu::virtio_net::VirtioNet;
    use relay_qemu::{clock, println, virtio_net};

    static ECHO: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/echo.wasm"));
    static DEPLOY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/deploy.wasm"));

    /// The journal: a 64 KiB NOR partition, in a host file when the boot
    /// arguments name one (`journal=PATH`, through semihosting: it outlives
    /// a killed QEMU), else in RAM.
    const JOURNAL: u32 = 64 * 1024;

    /// The update partition: three 64 KiB bundle regions (the active
    /// version, the previous one, a transfer) and the state's two sectors.
    pub const UPDATES: Layout = Layout {
        base: 0,
        regions: 3,
        region_bytes: 64 * 1024,
    };

    struct Qemu;

    impl Board for Qemu {
        fn now_ms(&self) -> u64 {
            clock::unix_ms()
        }

        fn log(&self, line: core::fmt::Arguments<'_>) {
            println!("{line}");
        }

        fn restart(&self) -> ! {
            exit(3)
        }
    }

    struct RtcClock;

    impl Clock for RtcClock {
        fn now_ms(&self) -> u64 {
            clock::unix_ms()
        }
    }

    struct UartLogger;

    impl relay_core::host_env::Logger for UartLogger {
        fn log(&mut self, plugin: &str, level: LogLevel, message: &str) {
            println!("plugin {plugin} [{level:?}]: {message}");
        }
    }

    fn stop(why: &str) -> ! {
        println!("relay-qemu-net: {why}");
        exit(2)
    }

    #[riscv_rt::entry]
    fn main(_hart: usize, dtb: usize) -> ! {
        HEAP.init();
        // SAFETY: QEMU passes its device tree's address in a1, above the
        // RAM this program uses.
        let args = unsafe { BootArgs::from_device_tree(dtb) };
        let broker = args
            .get("broker")
            .unwrap_or_else(|| stop("no broker: pass -append \"broker=HOST:PORT device=ID\""));
        let device_id = String::from(args.get("device").unwrap_or("qemu"));
        let (host, port) = match broker.rsplit_once(':').map(|(h, p)| (h, p.parse::<u16>())) {
            Some((host, Ok(port))) => (host, port),
            _ => stop("opt/relay/broker must be HOST:PORT"),
        };
        let Some(card) = virtio_net::find() else {
            stop("no virtio-net card: pass -device virtio-net-device,netdev=...")
        };
        let config = embassy_net::Config::ipv4_static(StaticConfigV4 {
            address: Ipv4Cidr::new(Ipv4Address::new(10, 0, 2, 15), 24),
            gateway: Some(Ipv4Address::new(10, 0, 2, 2)),
            dns_servers: Default::default(),
        });
        let resources = Box::leak(Box::new(StackResources::<3>::new()));
        let seed = clock::unix_ms() ^ 0x5eed_5eed_5eed_5eed;
        let (stack, mut runner) = embassy_net::new(card, config, resources, seed);

        let session = SessionConfig {
            broker_host: host,
            broker_port: port,
            device: &device_id,
            prefix: "relay",
        };
        let updates = args.get("updates").map(|path| {
            let len = UPDATES.bytes::<FileFlash>();
            let flash = FileFlash::open(path, len).unwrap_or_else(|e| {
                stop(&alloc::format!(
                    "the update file {path} does not open: {e:?}"
                ))
            });
            let mut trust = TrustedKeys::new();
            let key = args
                .get("trust")
                .and_then(relay_core::ota::bundle::unhex)
                .and_then(|k| <[u8; 32]>::try_from(k).ok())
                .unwrap_or_else(|| stop("updates=PATH needs trust=<64 hex characters>"));
            trust
                .trust(&key)
                .unwrap_or_else(|e| stop(&alloc::format!("trust=: {e}")));
            (flash, trust)
        });
        match args.get("journal") {
            Some(path) => {
                let flash = FileFlash::open(path, JOURNAL).unwrap_or_else(|e| {
                    stop(&alloc::format!(
                        "the journal file {path} does not open: {e:?}"
                    ))
                });
                serve(flash, updates, stack, &mut runner, session)
            }
            None => serve(
                RamFlash::<4, 4096>::new(JOURNAL as usize),
                updates,
                stack,
                &mut runner,
                session,
            ),
        }
    }

    /// The update partition over `registry`, which holds the firmware's
    /// plugins (`factory`).
    fn updater(
        flash: FileFlash,
        trust: TrustedKeys,
        factory: BTreeMap<String, &'static [u8]>,
        registry: &mut Registry,
    ) -> Updater<FileFlash> {
        let limits = Limits::default();
        let options = UpdateOptions {
            trust,
            max_bundle_bytes: u64::from(UPDATES.region_bytes) - 4096,
            trial_commands: 3,
            host_version: env!("CARGO_PKG_VERSION"),
        };
        let env_limits = limits.clone();
        let make_env = Box::new(move |info: &relay_core::plugin::PluginInfo| {
            HostEnv::new(
                info.name.clone(),
                Box::new(MemKv::default()),
                Box::new(RtcClock),
                Box::new(UartLogger),
                &env_limits,
            )
        });
        Updater::open(
            flash,
            UPDATES,
            options,
            Box::new(plugins::engine()),
            limits,
            make_env,
            factory,
            registry,
        )
        .unwrap_or_else(|e| stop(&alloc::format!("the update partition does not open: {e}")))
    }

    /// Opens the journal on `flash`, loads the plugins and serves the broker.
    fn serve<F: NorFlash>(
        flash: F,
        updates: Option<(FileFlash, TrustedKeys)>,
        stack: Stack<'static>,
        runner: &mut Runner<'static, VirtioNet>,
        config: SessionConfig<'_>,
    ) -> ! {
        let journal = FlashLog::open(flash, 0, JOURNAL, 4096)
            .unwrap_or_else(|e| stop(&alloc::format!("the journal does not open: {e:?}")));
        let (mut registry, factory) = plugins::firmware(
            &[ECHO, DEPLOY],
            &Limits::default(),
            || RtcClock,
            || UartLogger,
        )
        .unwrap_or_else(|e| stop(&alloc::format!("{e}")));
        let updater = updates.map(|(flash, trust)| updater(flash, trust, factory, &mut registry));
        let boot = clock::unix_ms();
        let (device, restored) = Device::open(
            journal,
            registry,
            relay_embedded::policy(),
            MachineOptions::default(),
            boot,
        )
        .unwrap_or_else(|e| stop(&alloc::format!("the journal does not replay: {e}")));
        let device = match updater {
            Some(updater) => {
                println!(
                    "relay-qemu-net: plugin updates on, {} plugin(s) updated",
                    updater.state().plugins.len()
                );
                device.with_updates(Box::new(updater))
            }
            None => device,
        };
        println!(
            "relay-qemu-net: journal replayed ({} records), {} at 10.0.2.15, broker {}:{}",
            restored.report.records,
            device.describe(),
            config.broker_host,
            config.broker_port
        );
        let session = Session::new(stack, config, Qemu, device, boot);
        match block_on(select(runner.run(), session.run())) {
            Either::First(never) | Either::Second(never) => never,
        }
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("relay-qemu-net runs on QEMU's riscv32 virt machine: `cargo xtask qemu` runs it");
}
