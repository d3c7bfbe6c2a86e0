fn main() {
    let seed: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(1);
    let (cfg, expect) = tether_sim::schedule::random(seed);
    let mut sim = tether_sim::Sim::new(cfg);
    sim.run();
    println!("{}", sim.timeline());
    println!(
        "expect {expect:?}\nstats {:?}\nsent {:?} {:?}\nverify {:?}",
        sim.stats,
        sim.ledger.client_sent,
        sim.ledger.server_sent,
        tether_sim::schedule::verify(&sim, &expect)
    );
}
