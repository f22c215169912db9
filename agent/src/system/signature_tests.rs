//! Signature checking against what real Nix 2.8 printed and signed (captured in the
//! real-host tier's container: `nix-store --generate-binary-cache-key test-1`, `nix store sign
//! --recursive`, `nix path-info --json --recursive`), and the other JSON shapes Nix prints.

use fleetnode_state_machine::StorePath;

use super::path_info::{nix32_encode, parse};
use super::signatures::{TrustedKey, fingerprint, verify_closure};

const KEY: &str = "test-1:kH6i08AY9E1RYeP4RtJiTz1wlgcv/LEQPRmD87y/7ek=";
const PAYLOAD: &str = "/nix/store/lkdfic94g2phc0k4r5g4gm6k6hv81z9m-payload-1";
const TOP: &str = "/nix/store/mj7c9gf3n326a9zpvn6r36n1pzsinwf7-nixos-system-t-1";
/// `nix path-info --json --recursive` of a signed two-path closure, as Nix 2.8 printed it.
const SIGNED_2_8: &str = r#"[{"path":"/nix/store/lkdfic94g2phc0k4r5g4gm6k6hv81z9m-payload-1","narHash":"sha256-SfBWzUWyREzHyFaCEOptRM1HQqtWxSQYeelS7jOHfh8=","narSize":456,"references":[],"deriver":"/nix/store/1j24dkdnlj77685m9ygnl9z2kin0w7kp-payload-1.drv","registrationTime":1796124796,"ultimate":true,"signatures":["test-1:lJOz9nHYHYlKpbG6DVyKj1S5BwGs5OK+yncm3FZXqnb40Tos+4nTkDPH2uWVh5rsxbkMnh+d2B5SvlgDz1HfDg=="]},{"path":"/nix/store/mj7c9gf3n326a9zpvn6r36n1pzsinwf7-nixos-system-t-1","narHash":"sha256-97r52GxcEjfkceLp4VG3XeJxgNa24ABmR7u6ynG3rrU=","narSize":568,"references":["/nix/store/lkdfic94g2phc0k4r5g4gm6k6hv81z9m-payload-1"],"deriver":"/nix/store/f0y8rlrp279h1ackqd2sm75ymfh639d3-nixos-system-t-1.drv","registrationTime":1796124796,"ultimate":true,"signatures":["test-1:PcbbYQMChyok6SqgWro7IdWH/MPnxF7HHiV2s4Vhg948lkcDQ1kK44G1WLB/3EIXal8sC087ofpqtYjttn6ADg=="]}]"#;
/// The same kind of closure rewritten by `nix store make-content-addressed` (Nix 2.8): no
/// signature at all, and `nix store verify --sigs-needed 1` accepts it.
const CONTENT_ADDRESSED_2_8: &str = r#"[{"path":"/nix/store/vnlfsam0d9c8gp9g86m4gzvmm719jcm0-payload-2","narHash":"sha256-SfBWzUWyREzHyFaCEOptRM1HQqtWxSQYeelS7jOHfh8=","narSize":456,"references":[],"ca":"fixed:r:sha256:07vyhwrywlp9g4c29ianmd14gka4dpm110jnr33lqi5j8p6mdw29","registrationTime":1796124809},{"path":"/nix/store/xl4m62fs1qzw1p54ng8r8148w6jlpa8j-nixos-system-t-2","narHash":"sha256-WZ1NEUt6EyKzxNuR7KcQ9y6dgejDcDC/EaKpHD9bTT4=","narSize":568,"references":["/nix/store/vnlfsam0d9c8gp9g86m4gzvmm719jcm0-payload-2"],"ca":"fixed:r:sha256:0gjdbczirad226zk0w63x20rsbpp22kyr4fvqjrj44vs9c8lv7ar","registrationTime":1796124809}]"#;

fn key() -> Vec<TrustedKey> {
    vec![TrustedKey::parse(KEY).unwrap()]
}

fn path(text: &str) -> StorePath {
    StorePath::parse(text).unwrap()
}

#[test]
fn nix_base32_matches_nix() {
    // The CA field of a NAR-hashed path is its NAR hash in Nix base-32.
    let infos = parse(CONTENT_ADDRESSED_2_8).unwrap();
    assert_eq!(
        format!("fixed:r:sha256:{}", nix32_encode(&infos[0].nar_hash)),
        infos[0].content_address.clone().unwrap()
    );
}

#[test]
fn a_closure_signed_by_a_trusted_key_passes() {
    let infos = parse(SIGNED_2_8).unwrap();
    assert_eq!(infos.len(), 2);
    assert_eq!(
        fingerprint(&infos[1]),
        format!(
            "1;{TOP};sha256:{};568;{PAYLOAD}",
            nix32_encode(&infos[1].nar_hash)
        )
    );
    verify_closure(&path(TOP), &infos, &key()).unwrap();
}

#[test]
fn a_content_addressed_closure_without_signatures_is_refused() {
    let infos = parse(CONTENT_ADDRESSED_2_8).unwrap();
    let top = path("/nix/store/xl4m62fs1qzw1p54ng8r8148w6jlpa8j-nixos-system-t-2");
    let err = verify_closure(&top, &infos, &key()).unwrap_err();
    assert!(
        err.contains("has no signature") && err.contains("content-addressed"),
        "{err}"
    );
}

#[test]
fn an_untrusted_key_a_forged_signature_or_changed_contents_are_refused() {
    let other =
        vec![TrustedKey::parse("test-2:kH6i08AY9E1RYeP4RtJiTz1wlgcv/LEQPRmD87y/7ek=").unwrap()];
    let err = verify_closure(&path(TOP), &parse(SIGNED_2_8).unwrap(), &other).unwrap_err();
    assert!(err.contains("untrusted keys"), "{err}");

    // The right key name over a different NAR size: the signature does not match.
    let tampered = SIGNED_2_8.replace("\"narSize\":568", "\"narSize\":569");
    let err = verify_closure(&path(TOP), &parse(&tampered).unwrap(), &key()).unwrap_err();
    assert!(err.contains(TOP) && err.contains("do not match"), "{err}");

    // A reference dropped from the listing: the closure cannot be checked whole.
    let infos: Vec<_> = parse(SIGNED_2_8).unwrap().into_iter().skip(1).collect();
    let err = verify_closure(&path(TOP), &infos, &key()).unwrap_err();
    assert!(err.contains("not its reference"), "{err}");
}

#[test]
fn every_json_shape_of_newer_nix_parses_to_the_same_paths() {
    let expected = parse(SIGNED_2_8).unwrap();
    let old: serde_json::Value = serde_json::from_str(SIGNED_2_8).unwrap();
    // Nix 2.19+, format 1: keyed by full path, no "path" field, version and storeDir added.
    let mut v1 = serde_json::Map::new();
    // Format 2/3: an envelope, base names, structured hashes and signatures.
    let mut v3 = serde_json::Map::new();
    for item in old.as_array().unwrap() {
        let mut fields = item.as_object().unwrap().clone();
        let full = fields.remove("path").unwrap();
        fields.insert("version".into(), 1.into());
        fields.insert("storeDir".into(), "/nix/store".into());
        v1.insert(full.as_str().unwrap().to_owned(), fields.clone().into());
        let base = |s: &str| s.trim_start_matches("/nix/store/").to_owned();
        let hash = fields["narHash"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256-")
            .to_owned();
        fields.insert(
            "narHash".into(),
            serde_json::json!({"algorithm": "sha256", "format": "base64", "hash": hash}),
        );
        let refs: Vec<String> = fields["references"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| base(r.as_str().unwrap()))
            .collect();
        fields.insert("references".into(), serde_json::json!(refs));
        let sigs: Vec<serde_json::Value> = fields["signatures"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let (name, sig) = s.as_str().unwrap().split_once(':').unwrap();
                serde_json::json!({"keyName": name, "sig": sig})
            })
            .collect();
        fields.insert("signatures".into(), serde_json::json!(sigs));
        v3.insert(base(full.as_str().unwrap()), fields.into());
    }
    let v1 = serde_json::Value::Object(v1).to_string();
    let v3 = serde_json::json!({"version": 3, "storeDir": "/nix/store", "info": v3}).to_string();
    for text in [v1, v3] {
        let mut parsed = parse(&text).unwrap();
        parsed.sort_by(|a, b| a.path.cmp(&b.path));
        let mut expected = expected.clone();
        expected.sort_by(|a, b| a.path.cmp(&b.path));
        assert_eq!(parsed, expected, "{text}");
        verify_closure(&path(TOP), &parsed, &key()).unwrap();
    }
}

#[test]
fn malformed_output_is_an_error_naming_the_path_and_field() {
    for (text, expected) in [
        ("not json", "not JSON"),
        ("42", "expected an array or an object"),
        (
            r#"[{"path":"/nix/store/00000000000000000000000000000000-x","valid":false}]"#,
            "not a valid path",
        ),
        (
            r#"{"/nix/store/00000000000000000000000000000000-x":null}"#,
            "not a valid path",
        ),
        (r#"[{"path":"/etc/passwd"}]"#, "/etc/passwd"),
        (
            r#"[{"path":"/nix/store/00000000000000000000000000000000-x","narHash":"md5-AAAA","narSize":1,"references":[]}]"#,
            "narHash",
        ),
        (
            r#"[{"path":"/nix/store/00000000000000000000000000000000-x","narHash":"sha256-SfBWzUWyREzHyFaCEOptRM1HQqtWxSQYeelS7jOHfh8=","narSize":0,"references":[]}]"#,
            "narSize",
        ),
        (
            r#"[{"path":"/nix/store/00000000000000000000000000000000-x","narHash":"sha256-SfBWzUWyREzHyFaCEOptRM1HQqtWxSQYeelS7jOHfh8=","narSize":1,"references":["../x"]}]"#,
            "references",
        ),
        (
            r#"[{"path":"/nix/store/00000000000000000000000000000000-x","narHash":"sha256-SfBWzUWyREzHyFaCEOptRM1HQqtWxSQYeelS7jOHfh8=","narSize":1,"references":[],"signatures":["nocolon"]}]"#,
            "signatures",
        ),
    ] {
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains(expected), "{text}: {err}");
    }
}

#[test]
fn trusted_keys_are_parsed_strictly() {
    assert_eq!(TrustedKey::parse(KEY).unwrap().name, "test-1");
    for bad in [
        "test-1",
        ":kH6i08AY9E1RYeP4RtJiTz1wlgcv/LEQPRmD87y/7ek=",
        "k:!!",
        "k:AAAA",
    ] {
        assert!(TrustedKey::parse(bad).is_err(), "{bad}");
    }
}
