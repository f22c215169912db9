//! Pictures drawn by the server: the fleet by generation, a rollout's progress per wave, and
//! how long its hosts took to converge. Each is plain geometry and text here; the template
//! `console/chart.html` writes it as SVG, escaping every text as the rest of the page.

use fleetnode_wire::{HostState, Rollout};

use crate::fleet::FleetSummary;

/// Width of every chart, in SVG units (the page scales it).
const WIDTH: u32 = 720;
/// Height of one bar and its gap.
const ROW: u32 = 22;
/// Where bars start (room for their labels on the left).
const LEFT: u32 = 320;
/// Most closures drawn one by one in the fleet's picture; the rest are summed.
const MAX_CLOSURES: usize = 8;
/// Columns of the convergence histogram.
const BUCKETS: usize = 10;

/// A chart: bars with a tooltip each, and labels.
pub struct Chart {
    /// The element's id (stable, for tests and links).
    pub id: &'static str,
    /// Its height (the width is [`WIDTH`]).
    pub height: u32,
    /// Its width.
    pub width: u32,
    /// What it shows, for screen readers.
    pub title: String,
    /// The bars.
    pub bars: Vec<Bar>,
    /// The texts.
    pub labels: Vec<Label>,
}

/// One rectangle.
pub struct Bar {
    /// Left.
    pub x: u32,
    /// Top.
    pub y: u32,
    /// Width.
    pub w: u32,
    /// Height.
    pub h: u32,
    /// Its style-sheet class (its colour).
    pub class: &'static str,
    /// Its tooltip.
    pub title: String,
}

/// One text.
pub struct Label {
    /// Anchor point, left.
    pub x: u32,
    /// Baseline.
    pub y: u32,
    /// The text (escaped when written).
    pub text: String,
    /// `start` or `end`.
    pub anchor: &'static str,
}

/// The hosts by the closure they run, largest groups first.
pub fn generations(summary: &FleetSummary) -> Chart {
    let mut groups: Vec<(String, usize)> = summary
        .by_closure
        .iter()
        .map(|(closure, n)| (super::view::short(closure.as_ref()), *n))
        .collect();
    groups.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    if groups.len() > MAX_CLOSURES {
        let rest: usize = groups[MAX_CLOSURES - 1..].iter().map(|g| g.1).sum();
        groups.truncate(MAX_CLOSURES - 1);
        groups.push(("other closures".to_owned(), rest));
    }
    let most = groups.iter().map(|g| g.1).max().unwrap_or(1).max(1);
    let mut chart = empty(
        "fleet-generations",
        "hosts by running closure",
        groups.len(),
    );
    for (row, (name, n)) in groups.into_iter().enumerate() {
        let y = row_y(row);
        chart.bars.push(Bar {
            x: LEFT,
            y,
            w: scale(n, most),
            h: ROW - 6,
            class: "bar-generation",
            title: format!("{n} hosts run {name}"),
        });
        chart.labels.push(label(LEFT - 6, y, name, "end"));
        chart
            .labels
            .push(label(LEFT + scale(n, most) + 4, y, n.to_string(), "start"));
    }
    chart
}

/// One stacked bar per wave: converged, failed, in flight, pending, taken out.
pub fn rollout_progress(rollout: &Rollout) -> Chart {
    let mut chart = empty(
        "rollout-progress",
        "hosts of each wave by where they are",
        rollout.waves.len(),
    );
    let widest = rollout
        .waves
        .iter()
        .map(|w| w.hosts.len())
        .max()
        .unwrap_or(1)
        .max(1);
    for (index, wave) in rollout.waves.iter().enumerate() {
        let mut counts = [0usize; 5];
        for host in &wave.hosts {
            let slot = match rollout.hosts.get(host).map(|p| &p.state) {
                Some(HostState::Converged { .. }) => 0,
                Some(HostState::Failed { .. }) => 1,
                Some(HostState::InFlight { .. }) => 2,
                Some(HostState::Pending) | None => 3,
                Some(HostState::TakenOut { .. }) => 4,
            };
            counts[slot] += 1;
        }
        let y = row_y(index);
        let mut x = LEFT;
        for (slot, n) in counts.iter().enumerate() {
            if *n == 0 {
                continue;
            }
            let (class, what) = SLOTS[slot];
            let w = scale(*n, widest).max(2);
            chart.bars.push(Bar {
                x,
                y,
                w,
                h: ROW - 6,
                class,
                title: format!("wave {}: {n} {what}", index + 1),
            });
            x += w;
        }
        let text = format!(
            "wave {} ({}): {} hosts",
            index + 1,
            wave.spec,
            wave.hosts.len()
        );
        chart.labels.push(label(LEFT - 6, y, text, "end"));
    }
    chart
}

/// How long the converged hosts took, from being given the release to converged: a
/// histogram of [`BUCKETS`] equal spans up to the slowest.
pub fn convergence(rollout: &Rollout) -> Chart {
    let took: Vec<u64> = rollout
        .hosts
        .values()
        .filter_map(|p| match p.state {
            HostState::Converged {
                assigned_at, at, ..
            } => Some(at.0.saturating_sub(assigned_at.0)),
            _ => None,
        })
        .collect();
    let slowest = took.iter().copied().max().unwrap_or(0).max(1);
    // Whole seconds: the labels speak in seconds.
    let span = slowest.div_ceil(BUCKETS as u64).div_ceil(1000).max(1) * 1000;
    let mut buckets = [0usize; BUCKETS];
    for ms in &took {
        let index = usize::try_from(ms / span)
            .unwrap_or(BUCKETS - 1)
            .min(BUCKETS - 1);
        buckets[index] += 1;
    }
    let tallest = buckets.iter().copied().max().unwrap_or(1).max(1);
    let height = 120;
    let mut chart = Chart {
        id: "rollout-convergence",
        width: WIDTH,
        height: height + 30,
        title: format!("time to converge of {} hosts", took.len()),
        bars: Vec::new(),
        labels: Vec::new(),
    };
    if took.is_empty() {
        chart.height = 30;
        chart.labels.push(label(
            20,
            0,
            "no host has converged yet".to_owned(),
            "start",
        ));
        return chart;
    }
    let column = (WIDTH - 40) / u32::try_from(BUCKETS).unwrap_or(10);
    for (index, n) in buckets.iter().enumerate() {
        let h = u32::try_from(n * 110 / tallest).unwrap_or(110);
        let x = 20 + u32::try_from(index).unwrap_or(0) * column;
        let from = seconds(span * index as u64);
        let to = seconds(span * (index as u64 + 1));
        chart.bars.push(Bar {
            x,
            y: height - h,
            w: column - 4,
            h,
            class: "bar-converged",
            title: format!("{n} hosts converged in {from} to {to}"),
        });
        if index % 2 == 0 {
            chart.labels.push(label(x, height + 4, from, "start"));
        }
    }
    chart
}

/// Class and meaning of each slot of a wave's bar.
const SLOTS: [(&str, &str); 5] = [
    ("bar-converged", "converged"),
    ("bar-failed", "failed"),
    ("bar-in-flight", "in flight"),
    ("bar-pending", "pending"),
    ("bar-taken-out", "taken out"),
];

fn empty(id: &'static str, title: &str, rows: usize) -> Chart {
    Chart {
        id,
        width: WIDTH,
        height: row_y(rows.max(1)) + 4,
        title: title.to_owned(),
        bars: Vec::new(),
        labels: Vec::new(),
    }
}

fn row_y(row: usize) -> u32 {
    4 + u32::try_from(row).unwrap_or(u32::MAX / ROW) * ROW
}

/// `n` of `most` as a bar length.
fn scale(n: usize, most: usize) -> u32 {
    let room = u64::from(WIDTH - LEFT - 40);
    u32::try_from(room * n as u64 / most.max(1) as u64).unwrap_or(0)
}

fn label(x: u32, y: u32, text: String, anchor: &'static str) -> Label {
    Label {
        x,
        y: y + ROW - 10,
        text,
        anchor,
    }
}

fn seconds(ms: u64) -> String {
    match ms / 1000 {
        s @ 0..120 => format!("{s}s"),
        s => format!("{}m", s / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use askama::Template;

    /// The charts as the pages write them.
    #[derive(Template)]
    #[template(
        source = "{% import \"console/chart.html\" as chart %}{% call chart::svg(c) %}{% endcall %}",
        ext = "html"
    )]
    struct Drawn {
        c: Chart,
    }

    #[test]
    fn every_text_of_a_chart_is_escaped() {
        let hostile = "<script>alert(1)</script>\"><img src=x onerror=alert(1)>";
        let mut chart = empty("test-chart", hostile, 1);
        chart.bars.push(Bar {
            x: 1,
            y: 1,
            w: 1,
            h: 1,
            class: "bar-failed",
            title: hostile.to_owned(),
        });
        chart.labels.push(label(1, 1, hostile.to_owned(), "start"));
        let svg = Drawn { c: chart }.render().unwrap();
        assert!(!svg.contains("<script") && !svg.contains("<img"), "{svg}");
        assert!(
            !svg.contains("alert(1)>"),
            "no tag is closed by the text: {svg}"
        );
        assert!(
            !svg.contains("\">\"") && !svg.contains("\"><img"),
            "no attribute is closed by it: {svg}"
        );
        assert_eq!(svg.matches("&#60;script&#62;").count(), 4, "{svg}");
    }
}
