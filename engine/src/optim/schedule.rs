//! Learning-rate schedules as pure functions of the optimizer step, with the formulas of Hugging
//! Face `transformers` (`get_*_schedule_with_warmup`). `step` counts optimizer steps from 0, as
//! `LambdaLR` does: the lr of the first update is `lr_at(base, 0)`, which is 0 during warmup.

/// A multiplier on the base learning rate, as a function of the step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LrSchedule {
    /// The base learning rate throughout.
    Constant,
    /// Linear warmup from 0 over `warmup_steps`, then constant (`get_constant_schedule_with_warmup`).
    ConstantWithWarmup { warmup_steps: u64 },
    /// Linear warmup from 0 over `warmup_steps`, then linear decay to 0 at `total_steps`
    /// (`get_linear_schedule_with_warmup`).
    Linear { warmup_steps: u64, total_steps: u64 },
    /// Linear warmup, then a cosine over `num_cycles` periods of the remaining steps
    /// (`get_cosine_schedule_with_warmup`; 0.5 = half a period, decaying to 0 at `total_steps`).
    Cosine { warmup_steps: u64, total_steps: u64, num_cycles: f32 },
}

impl LrSchedule {
    /// Linear warmup and decay to zero.
    pub fn linear(warmup_steps: u64, total_steps: u64) -> Self {
        LrSchedule::Linear { warmup_steps, total_steps }
    }

    /// Linear warmup and half a cosine down to zero (HF's default `num_cycles = 0.5`).
    pub fn cosine(warmup_steps: u64, total_steps: u64) -> Self {
        LrSchedule::Cosine { warmup_steps, total_steps, num_cycles: 0.5 }
    }

    /// The factor applied to the base learning rate at `step`.
    pub fn factor(&self, step: u64) -> f64 {
        let warmup = |w: u64| step as f64 / w.max(1) as f64;
        match *self {
            LrSchedule::Constant => 1.0,
            LrSchedule::ConstantWithWarmup { warmup_steps } => {
                if step < warmup_steps {
                    warmup(warmup_steps)
                } else {
                    1.0
                }
            }
            LrSchedule::Linear { warmup_steps, total_steps } => {
                if step < warmup_steps {
                    return warmup(warmup_steps);
                }
                let left = total_steps as f64 - step as f64;
                (left / total_steps.saturating_sub(warmup_steps).max(1) as f64).max(0.0)
            }
            LrSchedule::Cosine { warmup_steps, total_steps, num_cycles } => {
                if step < warmup_steps {
                    return warmup(warmup_steps);
                }
                let progress = (step - warmup_steps) as f64 / total_steps.saturating_sub(warmup_steps).max(1) as f64;
                let c = (std::f64::consts::PI * num_cycles as f64 * 2.0 * progress).cos();
                (0.5 * (1.0 + c)).max(0.0)
            }
        }
    }

    /// The learning rate at `step` for a base learning rate `base_lr`.
    pub fn lr_at(&self, base_lr: f32, step: u64) -> f32 {
        (base_lr as f64 * self.factor(step)) as f32
    }
}
