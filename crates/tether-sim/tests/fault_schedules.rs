//! At least 1000 random fault schedules per run: exactly-once in-order
//! delivery when outages are shorter than grace, explicit bounded expiry on
//! both ends when they are longer; a share of them against a store-backed
//! server whose nodes die and whose store fails, where exactly-once holds
//! across node deaths. `TETHER_SIM_SEED=N` replays one schedule;
//! `TETHER_SIM_SCHEDULES=N` changes how many run; `TETHER_SIM_FIRST=N` the
//! first seed (CI varies it per run so coverage grows over time).

use tether_sim::schedule::run_seed;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn a_thousand_random_fault_schedules_keep_every_guarantee() {
    if let Some(seed) = env_u64("TETHER_SIM_SEED") {
        match run_seed(seed) {
            Ok(s) => println!("seed {seed} passed: {s:?}"),
            Err(e) => panic!("{e}"),
        }
        return;
    }
    let count = env_u64("TETHER_SIM_SCHEDULES").unwrap_or(1000);
    let first = env_u64("TETHER_SIM_FIRST").unwrap_or(0);
    let (mut up, mut down, mut resumes, mut expired, mut lagged, mut resyncs) = (0, 0, 0, 0, 0, 0);
    let (mut stored, mut deaths, mut survived_deaths, mut store_outages, mut lost) = (0, 0, 0, 0, 0);
    let mut failures = Vec::new();
    for seed in first..first + count {
        match run_seed(seed) {
            Ok(s) => {
                up += s.up;
                down += s.down;
                resumes += s.resumes;
                expired += u64::from(s.expired);
                lagged += u64::from(s.lagged);
                resyncs += s.resyncs;
                stored += u64::from(s.store_backed);
                deaths += s.node_deaths;
                store_outages += s.store_outages;
                lost += s.lost_replies;
                if !s.expired && s.node_deaths > 0 {
                    survived_deaths += 1;
                }
            }
            Err(e) => failures.push(e),
        }
    }
    println!(
        "{count} schedules from seed {first}: {up} messages up, {down} down, {resumes} resumes, {expired} expiries, \
         {lagged} with lagging applications ({resyncs} resyncs); {stored} store-backed, {deaths} node deaths \
         ({survived_deaths} schedules whose session survived a node death), {store_outages} store outages \
         ({lost} lost replies); \
         {} failures",
        failures.len()
    );
    if let Some(f) = failures.first() {
        panic!("{} of {count} schedules failed; the first:\n{f}", failures.len());
    }
    assert!(resumes > count / 2, "schedules should force resumes: only {resumes}");
    assert!(expired > count / 30, "about one schedule in ten should expire: only {expired}");
    assert!(lagged > count / 20, "about one schedule in seven should lag: only {lagged}");
    assert!(resyncs > 0, "lagging schedules with small windows should force resyncs");
    assert!(stored > count / 5, "about one schedule in three should be store-backed: only {stored}");
    assert!(survived_deaths > count / 10, "about one schedule in four should survive a node death: {survived_deaths}");
    assert!(store_outages > count / 20, "about one schedule in eight should have the store fail: {store_outages}");
}
