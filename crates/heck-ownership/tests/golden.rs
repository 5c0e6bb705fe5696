//! Golden vectors: (target, members) → priority order, checked into the repository.
//!
//! Every process of a cluster must rank members identically, across builds, versions and
//! platforms. If this test fails, the hash or the score changed: that reshuffles every running
//! cluster during a rolling upgrade. Don't, unless that is the point; then regenerate with
//! `HECK_BLESS=1 cargo test -p heck-ownership --test golden` and say so in the changelog.
#![allow(clippy::unwrap_used)]
use heck_ownership::{Member, View, pair_hash};

fn render() -> String {
    let mut out = String::from("# kind\ttarget\tmembers\tpriority order\n");
    let plain: Vec<Member> = ["alpha", "bravo", "charlie", "delta", "echo"]
        .iter()
        .map(|n| Member::new(*n))
        .collect();
    let weighted: Vec<Member> = [
        ("alpha", 1.0),
        ("bravo", 2.0),
        ("charlie", 0.5),
        ("delta", 3.0),
    ]
    .iter()
    .map(|(n, w)| Member::weighted(*n, *w).unwrap())
    .collect();
    for (kind, members) in [("equal", plain), ("weighted", weighted)] {
        let desc: Vec<String> = members
            .iter()
            .map(|m| format!("{}={}", m.name(), m.weight()))
            .collect();
        let view = View::new(members).unwrap();
        for target in [
            "web-1",
            "web-2",
            "db",
            "10.0.0.1:8080",
            "https://example.com/health",
            "",
        ] {
            let order: Vec<&str> = view.priority(target).iter().map(|m| m.name()).collect();
            out.push_str(&format!(
                "{kind}\t{target}\t{}\t{}\n",
                desc.join(","),
                order.join(",")
            ));
        }
    }
    for (t, m) in [("web-1", "alpha"), ("", ""), ("ab", "c"), ("a", "bc")] {
        out.push_str(&format!("hash\t{t}\t{m}\t{:016x}\n", pair_hash(t, m)));
    }
    out
}

#[test]
fn rankings_match_the_checked_in_golden_vectors() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden.txt");
    let now = render();
    if std::env::var_os("HECK_BLESS").is_some() {
        std::fs::write(path, &now).unwrap();
    }
    let golden = std::fs::read_to_string(path).expect("tests/golden.txt is checked in");
    assert_eq!(
        now, golden,
        "the ownership hash changed: see this file's docs"
    );
}
