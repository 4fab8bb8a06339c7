//! Config text: parsing, `${VAR}` interpolation, validation. What validates
//! must hold the ranges `serve` relies on.
#![no_main]

use hearth::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Config::from_str(text, None, &|_| None);
    if let Ok(c) = Config::from_str(text, None, &|k| Some(format!("v-{k}"))) {
        let g = &c.gateway;
        assert!((1..=1024).contains(&g.max_connections));
        assert!((1..=1024).contains(&g.max_inflight));
        for p in c.providers.values() {
            assert!(p.timeout.as_secs() <= 3600);
            // what the first chat does with it (5b0ef1f panicked here)
            let _ = std::time::Instant::now()
                .checked_add(p.timeout)
                .expect("timeout fits");
        }
        for a in &c.agents {
            assert!(a.max_steps >= 1);
            if let Some(w) = &a.workspace {
                assert!(w.is_absolute());
            }
        }
    }
});
