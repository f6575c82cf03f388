#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg(feature = "http")]
//! The full policy shown in the README parses and builds a client.

use archon_client::http::{HttpClient, HttpClientConfig};

#[test]
fn readme_policy_parses_and_builds() {
    let readme = include_str!("../README.md");
    let start = readme.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let end = start + readme[start..].find("```").unwrap();
    let config: HttpClientConfig = toml::from_str(&readme[start..end]).unwrap();
    let up = &config.upstreams["inventory"];
    assert!(up.policy.retry.is_some());
    assert!(up.policy.hedge.is_some());
    assert!(up.policy.circuit_breaker.is_some());
    assert!(up.policy.bulkhead.is_some());
    assert!(up.policy.rate_limit.is_some());
    assert!(up.routes.contains_key("/reports"));
    let client = HttpClient::new(&config).unwrap();
    assert!(client.circuit_breaker("inventory", "/items/1").is_some());
    // The /reports route has its own policy, without a breaker.
    assert!(
        client
            .circuit_breaker("inventory", "/reports/daily")
            .is_none()
    );
}
