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
//! `-semihosting-config enable=on`). The address is QEMU user networking's usual static one,
//! 10.0.2.15/24.
//! The executor is `embassy_futures::block_on`: one task, polled without
//! interrupts, which is all a device loop and a TCP/IP stack need here.

#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod device {
    extern crate alloc;

    use alloc::boxed::Box;
    use alloc::string::String;

    use embassy_futures::block_on;
    use embassy_futures::select::{select, Either};
    use embassy_net::{Ipv4Address, Ipv4Cidr, Runner, Stack, StackResources, StaticConfigV4};
    use embedded_storage::nor_flash::NorFlash;
    use relay_core::host_env::Clock;
    use relay_core::limits::Limits;
    use relay_core::machine::MachineOptions;
    use relay_core::plugin::LogLevel;
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
        match args.get("journal") {
            Some(path) => {
                let flash = FileFlash::open(path, JOURNAL).unwrap_or_else(|e| {
                    stop(&alloc::format!(
                        "the journal file {path} does not open: {e:?}"
                    ))
                });
                serve(flash, stack, &mut runner, session)
            }
            None => serve(
                RamFlash::<4, 4096>::new(JOURNAL as usize),
                stack,
                &mut runner,
                session,
            ),
        }
    }

    /// Opens the journal on `flash`, loads the plugins and serves the broker.
    fn serve<F: NorFlash>(
        flash: F,
        stack: Stack<'static>,
        runner: &mut Runner<'static, VirtioNet>,
        config: SessionConfig<'_>,
    ) -> ! {
        let journal = FlashLog::open(flash, 0, JOURNAL, 4096)
            .unwrap_or_else(|e| stop(&alloc::format!("the journal does not open: {e:?}")));
        let registry = plugins::registry(
            &[ECHO, DEPLOY],
            &Limits::default(),
            || RtcClock,
            || UartLogger,
        )
        .unwrap_or_else(|e| stop(&alloc::format!("{e}")));
        let boot = clock::unix_ms();
        let (device, restored) = Device::open(
            journal,
            registry,
            relay_embedded::policy(),
            MachineOptions::default(),
            boot,
        )
        .unwrap_or_else(|e| stop(&alloc::format!("the journal does not replay: {e}")));
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
