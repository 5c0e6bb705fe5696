//! How `v1-bench` drives blackbox_exporter: requests paced at a fixed rate, at most a fixed
//! number in flight, and a request that comes due while every slot is busy is **missed**:
//! counted, never sent late. A queue in front of the slots (the first version had one, 256
//! deep, in a channel) would send those requests seconds after they were due and hide the
//! overload: the exporter would look as if it kept up, at a rate it did not hold.
//!
//! Pure: time is an argument, so the rule is tested without sockets or clocks.

/// Most `GET /probe` requests in flight to blackbox_exporter at once. Prometheus bounds open
/// scrapes only by rate × scrape timeout (20,000 at 100,000 targets and 2 s), which measures
/// how an exporter drowns rather than what it sustains. 256 is far above what the exporter
/// needs while it keeps up (1,000 probes/s of a few milliseconds each keep a handful busy), so
/// only an exporter that cannot keep up ever meets it. See docs/benchmarks.md.
pub const MAX_IN_FLIGHT: usize = 256;

/// The pacer's state: what was sent, what is in flight, what was missed.
#[derive(Debug, Clone, PartialEq)]
pub struct Pacer {
    /// Requests per second.
    rate: f64,
    /// Most requests in flight.
    cap: usize,
    /// Requests that came due so far (sent or missed).
    due: u64,
    /// Sent and not yet finished.
    in_flight: usize,
}

/// What to do at one tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tick {
    /// Requests to send now; each has taken a slot, to be given back with [`Pacer::done`].
    pub send: usize,
    /// Requests that came due and found every slot busy: never sent.
    pub missed: u64,
}

impl Pacer {
    /// `rate` requests per second, at most `cap` in flight.
    pub fn new(rate: f64, cap: usize) -> Pacer {
        Pacer {
            rate,
            cap,
            due: 0,
            in_flight: 0,
        }
    }

    /// At `elapsed_s` seconds since the start: the requests that came due since the last tick
    /// are sent while slots are free, and the rest are missed.
    pub fn tick(&mut self, elapsed_s: f64) -> Tick {
        // `as` saturates: a negative or NaN elapsed time is 0 requests due.
        let due = ((elapsed_s * self.rate) as u64).max(self.due);
        let new = due - self.due;
        self.due = due;
        let free = self.cap - self.in_flight;
        let send = usize::try_from(new).unwrap_or(usize::MAX).min(free);
        self.in_flight += send;
        Tick {
            send,
            missed: new - send as u64,
        }
    }

    /// A request finished (answered, failed or timed out): its slot is free.
    pub fn done(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_sent_at_the_rate_while_slots_are_free() {
        let mut p = Pacer::new(1000.0, 256);
        assert_eq!(p.tick(0.0), Tick { send: 0, missed: 0 });
        assert_eq!(
            p.tick(0.01),
            Tick {
                send: 10,
                missed: 0
            }
        );
        for _ in 0..10 {
            p.done();
        }
        assert_eq!(
            p.tick(0.02),
            Tick {
                send: 10,
                missed: 0
            }
        );
        assert_eq!(p.in_flight(), 10);
    }

    #[test]
    fn a_request_due_while_every_slot_is_busy_is_missed_not_queued() {
        let mut p = Pacer::new(1000.0, 256);
        assert_eq!(
            p.tick(1.0),
            Tick {
                send: 256,
                missed: 744
            }
        );
        assert_eq!(p.in_flight(), 256, "never more than the cap");
        // Ten answers free ten slots, but the missed requests are not sent late.
        for _ in 0..10 {
            p.done();
        }
        assert_eq!(p.tick(1.0), Tick { send: 0, missed: 0 });
        // Only requests that come due later take the free slots; the rest are missed again.
        assert_eq!(
            p.tick(1.02),
            Tick {
                send: 10,
                missed: 10
            }
        );
        assert_eq!(p.in_flight(), 256);
    }

    #[test]
    fn a_clock_that_goes_back_sends_nothing() {
        let mut p = Pacer::new(100.0, 8);
        assert_eq!(p.tick(0.05), Tick { send: 5, missed: 0 });
        assert_eq!(p.tick(0.01), Tick { send: 0, missed: 0 });
        assert_eq!(p.tick(f64::NAN), Tick { send: 0, missed: 0 });
    }
}
