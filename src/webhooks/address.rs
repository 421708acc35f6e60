//! Where callbacks may go: URLs matching a pattern of `[webhooks] allow`, and never a loopback, private or
//! link-local address unless a pattern names that host literally (DESIGN §12).

use std::net::IpAddr;

/// `*` matches any run of characters (also none); everything else matches itself.
pub fn matches(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    // Without a `*` there is a single part, and the pattern must equal the text.
    let [first, middle @ .., last] = parts.as_slice() else {
        return pattern == text;
    };
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

/// The host a pattern names literally (no `*` in it), lower-cased, without brackets or port.
pub fn literal_host(pattern: &str) -> Option<String> {
    let after_scheme = pattern.split_once("://")?.1;
    let authority = after_scheme
        .split(['/', '?', '#'])
        .next()
        .unwrap_or_default();
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let host = if let Some(bracketed) = host_port.strip_prefix('[') {
        bracketed.split(']').next().unwrap_or_default()
    } else {
        host_port.split(':').next().unwrap_or_default()
    };
    (!host.is_empty() && !host.contains('*')).then(|| host.to_ascii_lowercase())
}

/// Loopback, private, link-local, unspecified, shared (CGNAT), multicast or otherwise not a public
/// internet address: a callback must not reach into the network jobdock runs in.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && v4.octets()[2] == 0)
                || a >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || (first & 0xffc0) == 0xfec0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_star_matches_any_run_of_characters() {
        assert!(matches(
            "https://hooks.example.com/*",
            "https://hooks.example.com/a/b?c=d"
        ));
        assert!(matches(
            "https://hooks.example.com/*",
            "https://hooks.example.com/"
        ));
        assert!(!matches(
            "https://hooks.example.com/*",
            "https://hooks.example.com.evil.io/"
        ));
        assert!(!matches(
            "https://hooks.example.com/*",
            "http://hooks.example.com/x"
        ));
        assert!(matches(
            "https://*.example.com/hook",
            "https://a.b.example.com/hook"
        ));
        assert!(!matches(
            "https://*.example.com/hook",
            "https://a.example.com/hook2"
        ));
        assert!(matches("https://x.io/exact", "https://x.io/exact"));
        assert!(!matches("https://x.io/exact", "https://x.io/exactly"));
        assert!(matches("*", "anything"));
    }

    #[test]
    fn the_literal_host_of_a_pattern_is_found_without_port_or_brackets() {
        assert_eq!(
            literal_host("http://127.0.0.1:9000/*").as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(literal_host("http://[::1]:9000/*").as_deref(), Some("::1"));
        assert_eq!(
            literal_host("https://Hooks.Example.com/*").as_deref(),
            Some("hooks.example.com")
        );
        assert_eq!(literal_host("https://*.example.com/*"), None);
        assert_eq!(literal_host("*"), None);
    }

    #[test]
    fn internal_addresses_are_recognised() {
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_internal(internal.parse().unwrap()), "{internal}");
        }
        for public in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(!is_internal(public.parse().unwrap()), "{public}");
        }
    }
}
