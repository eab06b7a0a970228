//! Unit tests of the ACME source.

use super::*;

#[test]
fn renewal_falls_at_the_fraction_of_the_lifetime() {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["a.example.test".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let held = certified(&cert.pem(), &key.serialize_pem(), &provider).unwrap();
    let life = held.not_after.duration_since(held.not_before).unwrap();
    let at = held.renew_at(DEFAULT_RENEW_FRACTION);
    let into = at.duration_since(held.not_before).unwrap();
    assert!((into.as_secs_f64() / life.as_secs_f64() - 2.0 / 3.0).abs() < 1e-6);
}

#[test]
fn the_tls_alpn_certificate_carries_the_digest_in_a_critical_acme_identifier() {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let digest = [7u8; 32];
    let key = tls_alpn_certificate("a.example.test", &digest, &provider).unwrap();
    let der = key.end_entity_cert().unwrap().to_vec();
    // id-pe-acmeIdentifier (1.3.6.1.5.5.7.1.31), critical, OCTET STRING { digest }.
    let mut ext = vec![0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x01, 0x1f];
    ext.extend_from_slice(&[0x01, 0x01, 0xff, 0x04, 0x22, 0x04, 0x20]);
    ext.extend_from_slice(&digest);
    assert!(der.windows(ext.len()).any(|w| w == ext.as_slice()));
}

#[tokio::test(start_paused = true)]
async fn orders_beyond_the_rate_wait_for_the_minute_to_pass() {
    let dir = std::env::temp_dir().join(format!("netbore-acme-rate-{}", std::process::id()));
    let mut config = AcmeConfig::new("https://acme.invalid/dir", "ops@example.test", &dir);
    config.orders_per_minute = 2;
    let source = AcmeSource::new(config).unwrap();
    let start = tokio::time::Instant::now();
    source.inner.take_order_slot("a").await;
    source.inner.take_order_slot("b").await;
    assert_eq!(start.elapsed(), Duration::ZERO, "two orders start at once");
    source.inner.take_order_slot("c").await;
    assert!(
        start.elapsed() >= Duration::from_secs(60),
        "the third waits a minute: {:?}",
        start.elapsed()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Says no agent serves any name.
#[derive(Debug)]
struct NothingOnline;

impl TunnelLookup for NothingOnline {
    fn online_owner(&self, _: &str) -> Option<String> {
        None
    }
}

#[tokio::test]
async fn a_name_no_agent_serves_is_not_ordered() {
    let dir = std::env::temp_dir().join(format!("netbore-acme-offline-{}", std::process::id()));
    let mut config = AcmeConfig::new("https://acme.invalid/dir", "ops@example.test", &dir);
    config.wait = Duration::from_secs(5);
    let source = AcmeSource::with_tunnels(config, Arc::new(NothingOnline)).unwrap();
    source.prepare("app.example.test").await;
    assert!(lock(&source.inner.inflight).is_empty());
    assert!(lock(&source.inner.failed).is_empty(), "no order was tried");
    assert!(source.inner.orders.lock().await.is_empty());
    assert!(source.inner.owner_orders.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn challenge_tokens_leave_with_their_order() {
    let challenges = Http01Challenges::default();
    challenges.lock().insert("t1".into(), "t1.thumb".into());
    {
        let _guard = TokenGuard {
            challenges: &challenges,
            tokens: vec!["t1".into()],
        };
        assert_eq!(challenges.respond("t1").as_deref(), Some("t1.thumb"));
    }
    assert_eq!(challenges.respond("t1"), None);
}
