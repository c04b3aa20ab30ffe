//! The metrics exposition formats, pure: Prometheus text 0.0.4 and
//! OpenMetrics 1.0, chosen from the scraper's `Accept`. The loop's
//! responder (`event_loop/metrics.rs`) gathers the figures and writes them
//! through a `Writer`; nothing here does I/O.

/// Which format a scrape gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Prometheus,
    OpenMetrics,
}

impl Format {
    /// OpenMetrics when the scraper lists it (Prometheus sends
    /// `application/openmetrics-text;version=1.0.0,...;q=0.5,...`);
    /// Prometheus text otherwise.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let om = accept.is_some_and(|a| {
            a.split(',').any(|part| {
                let mut it = part.split(';');
                let media = it.next().unwrap_or("").trim();
                let q_zero = it.any(|p| {
                    p.trim()
                        .strip_prefix("q=")
                        .and_then(|q| q.parse::<f64>().ok())
                        == Some(0.0)
                });
                media.eq_ignore_ascii_case("application/openmetrics-text") && !q_zero
            })
        });
        if om {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    /// A constant 1 with labels (`archon_build_info`).
    Info,
}

/// Writes metric families in one format.
pub struct Writer {
    fmt: Format,
    out: String,
    /// The current family's sample name.
    sample_name: String,
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A value as both formats write it.
fn number(v: f64, out: &mut String) {
    use std::fmt::Write;
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        let _ = write!(out, "{}", v as i64);
    } else {
        let _ = write!(out, "{v}");
    }
}

impl Writer {
    pub fn new(fmt: Format) -> Writer {
        Writer {
            fmt,
            out: String::with_capacity(4096),
            sample_name: String::new(),
        }
    }

    /// Starts a family. `base` is the name without `_total` or `_info`
    /// (`archon_service_restarts`): each format adds what it wants.
    pub fn family(&mut self, base: &str, kind: Kind, help: &str) {
        let (family, sample, ty) = match (self.fmt, kind) {
            (Format::Prometheus, Kind::Counter) => {
                (format!("{base}_total"), format!("{base}_total"), "counter")
            }
            (Format::OpenMetrics, Kind::Counter) => {
                (base.to_string(), format!("{base}_total"), "counter")
            }
            (Format::Prometheus, Kind::Info) => {
                (format!("{base}_info"), format!("{base}_info"), "gauge")
            }
            (Format::OpenMetrics, Kind::Info) => (base.to_string(), format!("{base}_info"), "info"),
            (_, Kind::Gauge) => (base.to_string(), base.to_string(), "gauge"),
        };
        self.out.push_str("# HELP ");
        self.out.push_str(&family);
        self.out.push(' ');
        for c in help.chars() {
            match c {
                '\\' => self.out.push_str("\\\\"),
                '\n' => self.out.push_str("\\n"),
                c => self.out.push(c),
            }
        }
        self.out.push_str("\n# TYPE ");
        self.out.push_str(&family);
        self.out.push(' ');
        self.out.push_str(ty);
        self.out.push('\n');
        self.sample_name = sample;
    }

    /// One sample of the current family.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(&self.sample_name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(k);
                self.out.push_str("=\"");
                escape(v, &mut self.out);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        number(value, &mut self.out);
        self.out.push('\n');
    }

    /// The text; OpenMetrics ends with `# EOF`.
    pub fn finish(mut self) -> String {
        if self.fmt == Format::OpenMetrics {
            self.out.push_str("# EOF\n");
        }
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_chooses_the_format() {
        let prom = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prom)), Format::OpenMetrics);
        assert_eq!(Format::negotiate(Some("text/plain")), Format::Prometheus);
        assert_eq!(Format::negotiate(None), Format::Prometheus);
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;q=0")),
            Format::Prometheus
        );
    }

    #[test]
    fn both_formats_name_counters_as_their_specs_say() {
        let mut w = Writer::new(Format::Prometheus);
        w.family("archon_service_restarts", Kind::Counter, "Restarts.");
        w.sample(&[("service", "a\"b\\c\nd"), ("reason", "exit")], 3.0);
        w.family("archon_build", Kind::Info, "Build.");
        w.sample(&[("version", "1")], 1.0);
        w.family("g", Kind::Gauge, "G.");
        w.sample(&[], 0.25);
        assert_eq!(
            w.finish(),
            "# HELP archon_service_restarts_total Restarts.\n# TYPE archon_service_restarts_total counter\n\
             archon_service_restarts_total{service=\"a\\\"b\\\\c\\nd\",reason=\"exit\"} 3\n\
             # HELP archon_build_info Build.\n# TYPE archon_build_info gauge\narchon_build_info{version=\"1\"} 1\n\
             # HELP g G.\n# TYPE g gauge\ng 0.25\n"
        );
        let mut w = Writer::new(Format::OpenMetrics);
        w.family("archon_service_restarts", Kind::Counter, "Restarts.");
        w.sample(&[], 1.0);
        w.family("archon_build", Kind::Info, "Build.");
        w.sample(&[("version", "1")], 1.0);
        assert_eq!(
            w.finish(),
            "# HELP archon_service_restarts Restarts.\n# TYPE archon_service_restarts counter\n\
             archon_service_restarts_total 1\n# HELP archon_build Build.\n# TYPE archon_build info\n\
             archon_build_info{version=\"1\"} 1\n# EOF\n"
        );
    }
}
