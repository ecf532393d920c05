//! The stampede simulator: a steady read load on one hot key, replayed across many expiries
//! under each stampede policy, in simulated time (deterministic, seeded).
//!
//! ```text
//! cargo run --release --example stampede                 # print the tables
//! cargo run --release --example stampede -- --write-docs # regenerate docs/STAMPEDE.md and docs/stampede.svg
//! ```
//!
//! Model: P = 10 processes share one cache tier; reads arrive as a Poisson stream of rate λ
//! (spread uniformly over the processes); the value lives T = 60 s; a load takes δ = 1 s.
//! Policies, as cachemacro implements them:
//!
//! * plain TTL (`stampede = none`): every reader that finds the value missing loads it;
//! * coalescing (`coalesce`): one load per process at a time, its readers wait for it;
//! * lock (`lock`): one load fleet-wide, everyone else waits for it;
//! * XFetch without a lock (the paper's algorithm, uncoordinated): each read refreshes early
//!   when `δ·β·(−ln rand) ≥ time left`; every such decision recomputes;
//! * XFetch + try-lock (`xfetch`): the same decision, but only the process that takes the
//!   lock recomputes; the others keep serving.
//!
//! The XFetch decision is cachemacro's own (`now + δβ(−ln r) ≥ expiry`); what is simulated
//! is the fleet and the clock, so every figure is reproducible on any machine.

use std::fmt::Write as _;

const PROCESSES: usize = 10;
const TTL: f64 = 60.0;
const DELTA: f64 = 1.0;
const PERIODS: f64 = 200.0;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Policy {
    PlainTtl,
    Coalesce,
    Lock,
    XfetchNoLock,
    XfetchLock,
}

impl Policy {
    const ALL: [Policy; 5] = [
        Policy::PlainTtl,
        Policy::Coalesce,
        Policy::Lock,
        Policy::XfetchNoLock,
        Policy::XfetchLock,
    ];

    fn name(self) -> &'static str {
        match self {
            Policy::PlainTtl => "plain TTL",
            Policy::Coalesce => "coalescing only",
            Policy::Lock => "lock",
            Policy::XfetchNoLock => "XFetch, no lock",
            Policy::XfetchLock => "XFetch + try-lock",
        }
    }
}

#[derive(Default, Debug, Clone, Copy)]
struct Outcome {
    /// Source calls per refresh: loads started while none was in flight begin a refresh;
    /// loads started during one join it. The stampede factor.
    loads_per_refresh: f64,
    /// Source calls per TTL period (XFetch refreshes early, so more than one refresh per
    /// period is its price).
    loads_per_period: f64,
    /// Readers that found the value missing, per TTL period.
    misses_per_period: f64,
    /// The longest any reader waited, in units of δ.
    longest_wait: f64,
    /// For XFetch: the mean lead of a refresh over the expiry it pre-empted, in s.
    mean_lead: f64,
}

/// One simulation run.
fn simulate(policy: Policy, rate: f64, beta: f64, seed: u64) -> Outcome {
    let mut rng = fastrand::Rng::with_seed(seed);
    let horizon = TTL * PERIODS;
    let mut expiry = TTL; // a value loaded at t = 0
                          // Loads in flight: (completion time, process).
    let mut inflight: Vec<(f64, usize)> = Vec::new();
    let (mut loads, mut misses, mut refreshes) = (0u64, 0u64, 0u64);
    let mut longest_wait: f64 = 0.0;
    let (mut lead_sum, mut leads) = (0.0, 0u64);
    let mut t = 0.0;
    loop {
        t += -(1.0 - rng.f64()).ln() / rate; // Poisson arrivals
        if t >= horizon {
            break;
        }
        // Loads that completed write the value.
        inflight.retain(|&(done, _)| {
            if done <= t {
                expiry = expiry.max(done + TTL);
                false
            } else {
                true
            }
        });
        let process = rng.usize(..PROCESSES);
        if t < expiry {
            let xfetch = matches!(policy, Policy::XfetchNoLock | Policy::XfetchLock);
            if xfetch {
                let left = expiry - t;
                let due = DELTA * beta * -(1.0 - rng.f64()).ln() >= left;
                let start = match policy {
                    Policy::XfetchNoLock => due,
                    _ => due && inflight.is_empty(), // the try-lock
                };
                if start {
                    refreshes += u64::from(inflight.is_empty());
                    inflight.push((t + DELTA, process));
                    loads += 1;
                    lead_sum += left;
                    leads += 1;
                }
            }
            continue; // served at once
        }
        misses += 1;
        let join = match policy {
            Policy::PlainTtl => None,
            Policy::Coalesce | Policy::XfetchNoLock => inflight
                .iter()
                .filter(|&&(_, p)| p == process)
                .map(|&(d, _)| d)
                .reduce(f64::min),
            Policy::Lock | Policy::XfetchLock => inflight.iter().map(|&(d, _)| d).reduce(f64::min),
        };
        let wait = match join {
            Some(done) => done - t,
            None => {
                refreshes += u64::from(inflight.is_empty());
                inflight.push((t + DELTA, process));
                loads += 1;
                DELTA
            }
        };
        longest_wait = longest_wait.max(wait / DELTA);
    }
    Outcome {
        loads_per_refresh: loads as f64 / refreshes.max(1) as f64,
        loads_per_period: loads as f64 / PERIODS,
        misses_per_period: misses as f64 / PERIODS,
        longest_wait,
        mean_lead: if leads == 0 {
            0.0
        } else {
            lead_sum / leads as f64
        },
    }
}

fn rate_for(load_delta: f64) -> f64 {
    load_delta / DELTA
}

/// The theory (Vattani, Chierichetti, Lowenstein, VLDB 2015, and its Gumbel reading):
/// triggers arrive with intensity λ·e^(−gap/δβ); the first one comes about δβ·(ln λδβ + γ)
/// before expiry; the chance that none comes in time (a miss) is exp(−λδβ·e^(−1/β)); without
/// a lock, about e^(1/β) − 1 more readers decide to recompute while the first recomputes.
fn predicted_lead(rate: f64, beta: f64) -> f64 {
    DELTA * beta * ((rate * DELTA * beta).ln() + 0.5772)
}

fn predicted_uncoordinated(beta: f64) -> f64 {
    (1.0 / beta).exp()
}

fn predicted_late(rate: f64, beta: f64) -> f64 {
    (-(rate * DELTA * beta) * (-1.0 / beta).exp()).exp()
}

struct Tables {
    policies: Vec<(f64, Vec<(Policy, Outcome)>)>,
    betas: Vec<(f64, Outcome, Outcome)>,
}

fn run() -> Tables {
    let mut policies = Vec::new();
    for (i, ld) in [10.0, 100.0, 1000.0].into_iter().enumerate() {
        let rows = Policy::ALL
            .iter()
            .map(|&p| (p, simulate(p, rate_for(ld), 1.0, 42 + i as u64)))
            .collect();
        policies.push((ld, rows));
    }
    let mut betas = Vec::new();
    for beta in [0.5, 1.0, 2.0, 4.0] {
        let rate = rate_for(100.0);
        betas.push((
            beta,
            simulate(Policy::XfetchNoLock, rate, beta, 7),
            simulate(Policy::XfetchLock, rate, beta, 7),
        ));
    }
    Tables { policies, betas }
}

fn markdown(t: &Tables) -> String {
    let mut md = String::new();
    for (ld, rows) in &t.policies {
        let _ = writeln!(md, "\n**load × δ = {ld}** (λ = {} reads/s, δ = 1 s, T = 60 s, 10 processes, 200 periods)\n", rate_for(*ld));
        let _ = writeln!(md, "| policy | source calls per refresh | source calls per TTL period | readers that found it missing, per period | longest any reader waited (× δ) |");
        let _ = writeln!(md, "|---|---|---|---|---|");
        for (p, o) in rows {
            let _ = writeln!(
                md,
                "| {} | {:.2} | {:.2} | {:.2} | {:.2} |",
                p.name(),
                o.loads_per_refresh,
                o.loads_per_period,
                o.misses_per_period,
                o.longest_wait
            );
        }
    }
    let _ = writeln!(md, "\n**β sweep** at load × δ = 100\n");
    let _ = writeln!(md, "| β | XFetch, no lock: calls per refresh | predicted ≈ e^(1/β) | XFetch + try-lock: calls per refresh | its calls per TTL period | refresh lead, s | predicted lead δβ(ln λδβ + γ), s | misses per period | predicted P(late) = exp(−λδβ·e^(−1/β)) |");
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|");
    for (beta, nolock, lock) in &t.betas {
        let _ = writeln!(
            md,
            "| {beta} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.3} | {:.3} |",
            nolock.loads_per_refresh,
            predicted_uncoordinated(*beta),
            lock.loads_per_refresh,
            lock.loads_per_period,
            lock.mean_lead,
            predicted_lead(rate_for(100.0), *beta),
            lock.misses_per_period,
            predicted_late(rate_for(100.0), *beta),
        );
    }
    md
}

/// Two panels: calls per expiry by policy and load (log scale), and the β sweep.
fn svg(t: &Tables) -> String {
    let (w, h) = (900.0, 380.0);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let colors = ["#d62728", "#ff7f0e", "#2ca02c", "#9467bd", "#1f77b4"];
    // Panel 1.
    let (x0, y0, pw, ph) = (60.0, 40.0, 420.0, 280.0);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" font-size="14">Source calls per refresh (log scale)</text>"#,
        x0
    );
    let max_log = 4.0_f64; // 10^4
    let y_of = |v: f64| y0 + ph - (v.max(0.1).log10() + 1.0) / (max_log + 1.0) * ph;
    for e in -1..=4 {
        let y = y_of(10f64.powi(e));
        let _ = writeln!(
            s,
            r##"<line x1="{x0}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            x0 + pw,
            x0 - 5.0,
            y + 4.0,
            10f64.powi(e)
        );
    }
    let group = pw / 3.0;
    let bar = group / 6.5;
    for (g, (ld, rows)) in t.policies.iter().enumerate() {
        for (i, (_, o)) in rows.iter().enumerate() {
            let x = x0 + g as f64 * group + 8.0 + i as f64 * bar;
            let y = y_of(o.loads_per_refresh);
            let _ = writeln!(
                s,
                r#"<rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{}"/>"#,
                bar - 2.0,
                y0 + ph - y,
                colors[i]
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">load×δ = {ld}</text>"#,
            x0 + g as f64 * group + group / 2.0,
            y0 + ph + 18.0
        );
    }
    for (i, p) in Policy::ALL.iter().enumerate() {
        let y = y0 + ph + 34.0 + (i / 3) as f64 * 16.0;
        let x = x0 + (i % 3) as f64 * 140.0;
        let _ = writeln!(
            s,
            r#"<rect x="{x}" y="{}" width="10" height="10" fill="{}"/><text x="{}" y="{y}">{}</text>"#,
            y - 9.0,
            colors[i],
            x + 14.0,
            p.name()
        );
    }
    // Panel 2.
    let (x0, pw) = (560.0, 300.0);
    let _ = writeln!(
        s,
        r#"<text x="{x0}" y="22" font-size="14">XFetch calls per refresh vs β (load×δ = 100)</text>"#
    );
    let ymax = 8.0;
    let y_of = |v: f64| y0 + ph - v.min(ymax) / ymax * ph;
    let x_of = |b: f64| x0 + (b.log2() + 1.0) / 3.0 * pw;
    for v in [0.0, 2.0, 4.0, 6.0, 8.0] {
        let y = y_of(v);
        let _ = writeln!(
            s,
            r##"<line x1="{x0}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{v}</text>"##,
            x0 + pw,
            x0 - 5.0,
            y + 4.0
        );
    }
    let mut curve = String::new();
    for k in 0..=60 {
        let b = 0.5 * 2f64.powf(k as f64 / 20.0);
        let _ = write!(
            curve,
            "{:.1},{:.1} ",
            x_of(b),
            y_of(predicted_uncoordinated(b))
        );
    }
    let _ = writeln!(
        s,
        r##"<polyline points="{curve}" fill="none" stroke="#999" stroke-dasharray="4 3"/>"##
    );
    for (beta, nolock, lock) in &t.betas {
        let x = x_of(*beta);
        let _ = writeln!(
            s,
            r#"<circle cx="{x:.1}" cy="{:.1}" r="5" fill="{}"/>"#,
            y_of(nolock.loads_per_refresh),
            colors[3]
        );
        let _ = writeln!(
            s,
            r#"<circle cx="{x:.1}" cy="{:.1}" r="5" fill="{}"/>"#,
            y_of(lock.loads_per_refresh),
            colors[4]
        );
        let _ = writeln!(
            s,
            r#"<text x="{x:.1}" y="{}" text-anchor="middle">β={beta}</text>"#,
            y0 + ph + 18.0
        );
    }
    let ly = y0 + ph + 34.0;
    let _ = writeln!(
        s,
        r##"<line x1="{x0}" y1="{}" x2="{}" y2="{}" stroke="#999" stroke-dasharray="4 3"/><text x="{}" y="{ly}">paper: e^(1/β)</text>"##,
        ly - 4.0,
        x0 + 20.0,
        ly - 4.0,
        x0 + 24.0
    );
    let _ = writeln!(
        s,
        r#"<circle cx="{}" cy="{}" r="5" fill="{}"/><text x="{}" y="{ly}">XFetch, no lock</text>"#,
        x0 + 130.0,
        ly - 4.0,
        colors[3],
        x0 + 140.0
    );
    let _ = writeln!(
        s,
        r#"<circle cx="{}" cy="{}" r="5" fill="{}"/><text x="{}" y="{}">XFetch + try-lock</text>"#,
        x0 + 130.0,
        ly + 12.0,
        colors[4],
        x0 + 140.0,
        ly + 16.0
    );
    let _ = writeln!(s, "</svg>");
    s
}

fn main() {
    let tables = run();
    let md = markdown(&tables);
    println!("{md}");
    if std::env::args().any(|a| a == "--write-docs") {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
        let doc = std::fs::read_to_string(root.join("STAMPEDE.md.in"))
            .expect("docs/STAMPEDE.md.in")
            .replace("{{TABLES}}", md.trim());
        std::fs::write(root.join("STAMPEDE.md"), doc).unwrap();
        std::fs::write(root.join("stampede.svg"), svg(&tables)).unwrap();
        println!("wrote docs/STAMPEDE.md and docs/stampede.svg");
    }
}
