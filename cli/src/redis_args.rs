//! The flags naming a fleet's Redis, shared by `netbore server` and `netbore key`.

/// Where a fleet's shared store lives.
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct RedisArgs {
    /// Keep the control store (API keys, reserved names, tunnel records with their
    /// recreate-token hashes) in the Redis at this URL instead of DATA_DIR/netbore.db,
    /// so every server given the same URL shares it (and, for `netbore server`, the
    /// fleet's directory): rediss://[:PASSWORD@]HOST[:PORT][/DB] (TLS, checked against
    /// the system's roots or SSL_CERT_FILE), redis://… on this machine, or
    /// redis+unix:///PATH.
    #[arg(
        long,
        env = "NETBORE_REDIS",
        hide_env_values = true,
        value_name = "URL",
        global = true
    )]
    pub(crate) redis: Option<String>,
    /// Allow a redis:// URL (no TLS) to a Redis on another machine: the fleet's link
    /// secret, key hashes and certificate keys then cross that network readable.
    #[arg(
        long,
        env = "NETBORE_REDIS_PLAINTEXT",
        requires = "redis",
        global = true
    )]
    pub(crate) redis_plaintext: bool,
}

impl RedisArgs {
    /// The Redis URL, once it is known not to cross a network in clear text (unless
    /// allowed).
    pub(crate) fn url(&self) -> anyhow::Result<Option<&str>> {
        match &self.redis {
            Some(url) => {
                netbore_control::store::check_transport(url, self.redis_plaintext)?;
                Ok(Some(url))
            }
            None => Ok(None),
        }
    }
}
