//! The one set of flags every app-side subcommand (`send`, `status`,
//! `watch`) uses to reach the broker, and how they become
//! [`ClientOptions`].
//!
//! A broker can be named as a URL (`--broker mqtts://alice@broker:8883`) or
//! piece by piece (`--host`, `--port`, `-u`). The password never has to be
//! on the command line (where `ps` and shell history would keep it): it comes
//! from `$RELAY_PASSWORD`, else from a prompt when stdin is a terminal. A
//! password inside `--broker` is refused for the same reason.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use relay_client::{ClientOptions, TlsFiles};

use crate::time::parse_duration;

/// Environment variable holding the broker password.
pub const PASSWORD_ENV: &str = "RELAY_PASSWORD";

/// How to reach the broker.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Broker")]
pub struct ConnectArgs {
    /// Broker URL: mqtt://[user@]host[:port] or mqtts://[user@]host[:port]
    /// (TLS with the system's roots, or --tls-ca). Overrides --host, --port, --username.
    #[arg(long, env = "RELAY_BROKER", value_name = "URL")]
    pub broker: Option<String>,
    /// MQTT broker host.
    #[arg(long, env = "RELAY_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// MQTT broker port [default: 1883, 8883 with TLS].
    #[arg(long, env = "RELAY_PORT")]
    pub port: Option<u16>,
    /// Username for the broker; the password comes from $RELAY_PASSWORD or a prompt.
    #[arg(long, short = 'u', env = "RELAY_USERNAME")]
    pub username: Option<String>,
    /// Topic prefix; must match the device's (`<prefix>/<device>/cmd/<role>`).
    #[arg(long, env = "RELAY_PREFIX", default_value = "relay")]
    pub prefix: String,
    /// Give up connecting after this long (e.g. `5s`, `500ms`).
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub connect_timeout: Duration,
    /// Connect with TLS, trusting this CA (PEM).
    #[arg(long, env = "RELAY_TLS_CA", value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
    /// Connect with TLS using the system's root certificates.
    #[arg(long, conflicts_with = "tls_ca")]
    pub tls: bool,
    /// TLS client certificate (PEM), for brokers that require one.
    #[arg(long, env = "RELAY_TLS_CERT", value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS client key (PEM).
    #[arg(long, env = "RELAY_TLS_KEY", value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// A parsed `--broker` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub tls: bool,
    pub username: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

/// `mqtt://[user@]host[:port]`, `mqtts://...` (also `tcp://`, `ssl://`).
pub fn parse_broker_url(url: &str) -> Result<BrokerUrl> {
    let (scheme, rest) = url.split_once("://").with_context(|| {
        format!("broker URL {url:?} has no scheme; use mqtt://host:port or mqtts://host:port")
    })?;
    let tls = match scheme {
        "mqtt" | "tcp" => false,
        "mqtts" | "ssl" | "tls" => true,
        other => bail!("broker URL scheme {other:?} is not supported; use mqtt:// or mqtts://"),
    };
    let rest = rest.trim_end_matches('/');
    if rest.contains('/') {
        bail!("broker URL {url:?} has a path; use mqtt://host:port");
    }
    let (username, hostport) = match rest.rsplit_once('@') {
        Some((user, hostport)) => {
            if user.contains(':') {
                bail!(
                    "broker URL {url:?} contains a password; pass it in ${PASSWORD_ENV} \
                     (or at the prompt) so it stays out of shell history and `ps`"
                );
            }
            if user.is_empty() {
                bail!("broker URL {url:?} has an empty user name");
            }
            (Some(user.to_string()), hostport)
        }
        None => (None, rest),
    };
    let (host, port) = split_host_port(hostport)
        .with_context(|| format!("broker URL {url:?}: invalid host or port"))?;
    if host.is_empty() {
        bail!("broker URL {url:?} has no host");
    }
    Ok(BrokerUrl {
        tls,
        username,
        host,
        port,
    })
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`.
fn split_host_port(s: &str) -> Result<(String, Option<u16>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']').context("unclosed '['")?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().context("port")?),
            None if after.is_empty() => None,
            None => bail!("unexpected {after:?} after the address"),
        };
        return Ok((host.to_string(), port));
    }
    match s.rsplit_once(':') {
        Some((host, port)) => Ok((host.to_string(), Some(port.parse().context("port")?))),
        None => Ok((s.to_string(), None)),
    }
}

impl ConnectArgs {
    /// Where this connects, for messages (`host:port`).
    pub fn describe(&self) -> String {
        match self.resolve() {
            Ok((_, host, port, _)) => format!("{host}:{port}"),
            Err(_) => self.broker.clone().unwrap_or_else(|| self.host.clone()),
        }
    }

    /// (tls, host, port, username) after `--broker` is applied.
    fn resolve(&self) -> Result<(bool, String, u16, Option<String>)> {
        let flag_tls = self.tls || self.tls_ca.is_some() || self.tls_cert.is_some();
        let (tls, host, port, username) = match &self.broker {
            Some(url) => {
                let url = parse_broker_url(url)?;
                (
                    url.tls || flag_tls,
                    url.host,
                    url.port.or(self.port),
                    url.username.or_else(|| self.username.clone()),
                )
            }
            None => (
                flag_tls,
                self.host.clone(),
                self.port,
                self.username.clone(),
            ),
        };
        let port = port.unwrap_or(if tls { 8883 } else { 1883 });
        Ok((tls, host, port, username))
    }

    /// The client options, asking for the password if a user is set and
    /// `$RELAY_PASSWORD` is not.
    pub fn options(&self) -> Result<ClientOptions> {
        self.options_with(password_for)
    }

    /// [`ConnectArgs::options`] with the password source given (tests).
    pub fn options_with(
        &self,
        password: impl FnOnce(&str) -> Result<String>,
    ) -> Result<ClientOptions> {
        let (tls, host, port, username) = self.resolve()?;
        let tls = tls.then(|| TlsFiles {
            ca: self.tls_ca.clone(),
            client_cert: self.tls_cert.clone(),
            client_key: self.tls_key.clone(),
        });
        let credentials = match username {
            Some(user) => {
                let pass = password(&user)?;
                Some((user, pass))
            }
            None => None,
        };
        Ok(ClientOptions {
            prefix: self.prefix.clone(),
            connect_timeout: self.connect_timeout,
            tls,
            credentials,
            ..ClientOptions::new(host, port)
        })
    }
}

/// `$RELAY_PASSWORD`, else a prompt on the terminal, else empty (a broker
/// that wants one then refuses the connection with a clear error).
fn password_for(user: &str) -> Result<String> {
    if let Ok(password) = std::env::var(PASSWORD_ENV) {
        return Ok(password);
    }
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        return rpassword::prompt_password(format!("password for {user}: "))
            .context("reading the password");
    }
    Ok(String::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        connect: ConnectArgs,
    }

    fn options(args: &[&str]) -> Result<ClientOptions> {
        let cli = Cli::try_parse_from(std::iter::once("t").chain(args.iter().copied()))?;
        cli.connect.options_with(|user| Ok(format!("pw-of-{user}")))
    }

    #[test]
    fn urls_name_scheme_user_host_and_port() {
        let o = options(&["--broker", "mqtts://alice@broker.example:9000"]).unwrap();
        assert_eq!((o.host.as_str(), o.port), ("broker.example", 9000));
        assert!(o.tls.is_some());
        assert_eq!(
            o.credentials,
            Some(("alice".to_string(), "pw-of-alice".to_string()))
        );
        let o = options(&["--broker", "mqtt://[::1]"]).unwrap();
        assert_eq!(
            (o.host.as_str(), o.port, o.tls.is_none()),
            ("::1", 1883, true)
        );
        let o = options(&["--broker", "mqtts://h"]).unwrap();
        assert_eq!(o.port, 8883, "TLS default port");
    }

    #[test]
    fn flags_work_without_a_url() {
        let o = options(&["--host", "h", "--port", "1999", "-u", "bob"]).unwrap();
        assert_eq!((o.host.as_str(), o.port), ("h", 1999));
        assert_eq!(o.credentials.unwrap().0, "bob");
        assert!(options(&[]).unwrap().credentials.is_none());
    }

    #[test]
    fn bad_urls_say_why() {
        let err = |url: &str| options(&["--broker", url]).unwrap_err().to_string();
        assert!(err("mqtt://a:secret@h").contains("RELAY_PASSWORD"));
        assert!(err("http://h").contains("not supported"));
        assert!(err("h:1883").contains("no scheme"));
        assert!(err("mqtt://h:99999").contains("invalid host or port"));
        assert!(err("mqtt://h/x").contains("path"));
    }
}
