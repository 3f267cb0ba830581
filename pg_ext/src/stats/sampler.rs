//! Sampling executions at a rate, cheaply.

/// Per-backend sampling of executions: each is picked independently with probability `rate`,
/// drawn as the number of executions to skip before the next pick (a geometric variable), so
/// that an execution that is not picked costs a decrement.
pub struct Sampler {
    /// A small xorshift generator (0 until seeded).
    state: u64,
    /// The rate `skip` was drawn for (NaN before the first draw).
    rate: f64,
    /// Executions left to skip before the next pick.
    skip: u64,
}

impl Default for Sampler {
    fn default() -> Self {
        Self::new()
    }
}

impl Sampler {
    pub const fn new() -> Self {
        Self { state: 0, rate: f64::NAN, skip: 0 }
    }

    #[inline]
    pub fn is_seeded(&self) -> bool {
        self.state != 0
    }

    pub fn seed(&mut self, seed: u64) {
        self.state = seed | 1;
    }

    /// The generator's current word (a pseudo-random value for the caller's own draws).
    pub fn state(&self) -> u64 {
        self.state
    }

    fn uniform(&mut self) -> f64 {
        if self.state == 0 {
            self.state = 0x9E37_79B9_7F4A_7C15;
        }
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        // In (0, 1]: the logarithm below stays finite.
        ((self.state >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    /// Executions to skip before the next pick at `rate` (0 < rate).
    fn gap(&mut self, rate: f64) -> u64 {
        if rate >= 1.0 {
            return 0;
        }
        let g = (self.uniform().ln() / (-rate).ln_1p()).floor();
        if g.is_finite() && g >= 0.0 { g.min(u64::MAX as f64 / 2.0) as u64 } else { 0 }
    }

    /// Whether this execution is picked at `rate`.
    #[inline]
    pub fn pick(&mut self, rate: f64) -> bool {
        if self.rate == rate {
            if self.skip > 0 {
                self.skip -= 1;
                return false;
            }
            self.skip = self.gap(rate);
            return true;
        }
        // A new rate (or the first execution): start a fresh gap, which this execution begins.
        self.rate = rate;
        self.skip = self.gap(rate);
        self.pick(rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampler() -> Sampler {
        let mut s = Sampler::new();
        s.seed(0x9E37_79B9_7F4A_7C15);
        s
    }

    #[test]
    fn executions_are_picked_at_the_rate() {
        for rate in [0.01, 0.1, 0.5] {
            let mut s = sampler();
            let n = 200_000;
            let picked = (0..n).filter(|_| s.pick(rate)).count() as f64;
            let expected = rate * f64::from(n);
            // Binomial: within 5 standard deviations.
            assert!((picked - expected).abs() < 5.0 * (expected * (1.0 - rate)).sqrt(), "{rate}: {picked}");
        }
    }

    #[test]
    fn a_rate_of_one_picks_every_execution_and_a_new_rate_takes_effect_at_once() {
        let mut s = sampler();
        assert!((0..1000).all(|_| s.pick(1.0)));
        // A long gap drawn at a tiny rate does not outlive the rate.
        let _ = (0..10).filter(|_| s.pick(1e-9)).count();
        assert!(s.pick(1.0));
    }
}
