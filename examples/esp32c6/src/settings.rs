//! What a build of the firmware is provisioned with: Wi-Fi credentials,
//! the broker, the device id and the topic prefix, all taken from the
//! environment at build time (`RELAY_*`, see the README). A firmware built
//! without them still builds (CI does), and says what is missing at boot.

/// The provisioning of this build.
pub struct Settings {
    pub ssid: &'static str,
    pub password: &'static str,
    /// `host:port` or `a.b.c.d:port` (port 1883 when absent).
    pub broker: &'static str,
    pub device: &'static str,
    pub prefix: &'static str,
    /// Where the clock is set from before the journal opens.
    pub ntp: &'static str,
    /// The public key (64 hex characters, `relay plugin keygen`'s `.pub`)
    /// plugin update bundles must be signed with; empty: updates off.
    pub trusted_key: &'static str,
}

/// Heap for the core, wasmi, one plugin and the network stack, on top of
/// the 64 KiB reclaimed from the bootloader.
pub const HEAP: usize = 256 * 1024;

impl Settings {
    pub const fn from_build() -> Settings {
        Settings {
            ssid: or(option_env!("RELAY_WIFI_SSID"), ""),
            password: or(option_env!("RELAY_WIFI_PASSWORD"), ""),
            broker: or(option_env!("RELAY_BROKER"), ""),
            device: or(option_env!("RELAY_DEVICE"), "esp32c6"),
            prefix: or(option_env!("RELAY_PREFIX"), "relay"),
            ntp: or(option_env!("RELAY_NTP"), "pool.ntp.org"),
            trusted_key: or(option_env!("RELAY_TRUSTED_KEY"), ""),
        }
    }

    /// What is missing for the device to reach its broker.
    pub fn problem(&self) -> Option<&'static str> {
        if self.ssid.is_empty() {
            Some("built without RELAY_WIFI_SSID: rebuild with the Wi-Fi network's name (README)")
        } else if self.broker.is_empty() {
            Some("built without RELAY_BROKER: rebuild with the broker's host:port (README)")
        } else if relay_core::name::validate_name(self.device).is_err() {
            Some("RELAY_DEVICE must match [A-Za-z0-9_-]{1,64}")
        } else {
            None
        }
    }

    /// The broker's host and port.
    pub fn broker_host_port(&self) -> (&'static str, u16) {
        match self.broker.rsplit_once(':') {
            Some((host, port)) => (host, port.parse().unwrap_or(1883)),
            None => (self.broker, 1883),
        }
    }
}

const fn or(value: Option<&'static str>, default: &'static str) -> &'static str {
    match value {
        Some(v) => v,
        None => default,
    }
}
