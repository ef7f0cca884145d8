//! Optimizers and learning-rate schedules with PyTorch's exact semantics.
//!
//! In: the typed settings of the spec's `train` section ([`crate::train_config::Optimizer`],
//! [`crate::train_config::Schedule`]), and at each step the parameters and their gradients.
//! Out: the parameters updated in place, and the optimizer's state (momentum buffers, Adam's
//! moments, the step count), which checkpoints save beside the weights.
//!
//! One update pass walks every parameter tensor (split across threads for large models):
//! each element is read and written once, the whole update fused into one loop. The formulas
//! are `torch.optim`'s single-tensor implementations, in f32 with the scalar factors computed
//! in f64 as Python does:
//! - SGD: `g += wd·p`; momentum `buf = g` on the first step, then `buf = μ·buf + (1-dampening)·g`;
//!   nesterov `g += μ·buf`, else `g = buf`; `p -= lr·g`.
//! - Adam: `g += wd·p`; `m = β1·m + (1-β1)·g`; `v = β2·v + (1-β2)·g²`;
//!   `p -= lr/(1-β1^t) · m / (sqrt(v)/sqrt(1-β2^t) + eps)`.
//! - AdamW: `p *= 1 - lr·wd` first, then Adam without weight decay in the gradient.
//!
//! The same pass notes whether any updated value is NaN or infinite (an OR of a compare on
//! the value already in a register: no second pass over the parameters), and [`OptimState::update`]
//! returns the first such tensor, so training stops before a non-finite weight is saved.

use crate::train_config::{Optimizer, Schedule};

/// One tensor's update: parameter, gradient and the two state vectors.
type Work<'a> = (&'a mut [f32], &'a [f32], &'a mut Vec<f32>, &'a mut Vec<f32>);

/// The optimizer's state for a list of parameter tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct OptimState {
    pub settings: Optimizer,
    /// Steps taken so far.
    pub step: u64,
    /// Per tensor: SGD's momentum buffer, or Adam's first moment (empty until first used).
    pub m: Vec<Vec<f32>>,
    /// Per tensor: Adam's second moment (empty for SGD).
    pub v: Vec<Vec<f32>>,
}

impl OptimState {
    /// Fresh state for tensors of the given sizes.
    pub fn new(settings: Optimizer, sizes: &[usize]) -> OptimState {
        let adam = !matches!(settings, Optimizer::Sgd { .. });
        let momentum = matches!(settings, Optimizer::Sgd { momentum, .. } if momentum != 0.0);
        OptimState {
            settings,
            step: 0,
            m: sizes
                .iter()
                .map(|&n| {
                    if adam || momentum {
                        vec![0.0; n]
                    } else {
                        vec![]
                    }
                })
                .collect(),
            v: sizes
                .iter()
                .map(|&n| if adam { vec![0.0; n] } else { vec![] })
                .collect(),
        }
    }

    /// The base learning rate of the settings.
    pub fn base_lr(&self) -> f64 {
        match self.settings {
            Optimizer::Sgd { lr, .. }
            | Optimizer::Adam { lr, .. }
            | Optimizer::AdamW { lr, .. } => lr,
        }
    }

    /// One update of every tensor: `params[i] -= ...(grads[i])` with learning rate `lr`.
    /// `params` and `grads` correspond to the state's tensors, in order. Returns the index of
    /// the first tensor holding a NaN or infinite value after the update, if any.
    #[must_use]
    pub fn update(
        &mut self,
        params: &mut [&mut [f32]],
        grads: &[&[f32]],
        lr: f64,
    ) -> Option<usize> {
        assert_eq!(params.len(), grads.len(), "a gradient per parameter");
        assert_eq!(params.len(), self.m.len(), "the state's tensors");
        self.step += 1;
        let step = self.step;
        let settings = self.settings.clone();
        let total: usize = grads.iter().map(|g| g.len()).sum();
        // Pair each tensor with its state, then split the list in two halves of about equal
        // size for two threads when the model is large (memory-bound: two cores' bandwidth).
        let mut work: Vec<Work> = params
            .iter_mut()
            .zip(grads)
            .zip(self.m.iter_mut().zip(self.v.iter_mut()))
            .map(|((p, g), (m, v))| (&mut **p, *g, m, v))
            .collect();
        // The first tensor (from `first` on) with a non-finite value after its update.
        let run = |items: &mut [Work], first: usize| {
            let mut bad = None;
            for (k, (p, g, m, v)) in items.iter_mut().enumerate() {
                if !update_tensor(&settings, step, lr, p, g, m, v) && bad.is_none() {
                    bad = Some(first + k);
                }
            }
            bad
        };
        if total < 1 << 18 {
            return run(&mut work, 0);
        }
        let mut acc = 0;
        let split = work
            .iter()
            .position(|(_, g, _, _)| {
                acc += g.len();
                acc >= total / 2
            })
            .map_or(work.len(), |i| i + 1);
        let (a, b) = work.split_at_mut(split);
        std::thread::scope(|s| {
            let first = s.spawn(|| run(a, 0));
            let second = run(b, split);
            first.join().expect("the update does not panic").or(second)
        })
    }
}

/// The update of one tensor (see the module documentation for the formulas): whether every
/// updated value is finite.
fn update_tensor(
    settings: &Optimizer,
    step: u64,
    lr: f64,
    p: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
) -> bool {
    // OR of "not finite" over the new values, on each value as it is stored.
    let mut bad = false;
    match *settings {
        Optimizer::Sgd {
            momentum,
            dampening,
            nesterov,
            weight_decay,
            ..
        } => {
            let (wd, mu, damp, lr) = (
                weight_decay as f32,
                momentum as f32,
                (1.0 - dampening) as f32,
                lr as f32,
            );
            let first = step == 1;
            if momentum == 0.0 {
                for (p, &g) in p.iter_mut().zip(g) {
                    let d = if wd != 0.0 { g + wd * *p } else { g };
                    *p -= lr * d;
                    bad |= !p.is_finite();
                }
                return !bad;
            }
            for ((p, &g), b) in p.iter_mut().zip(g).zip(m.iter_mut()) {
                let d = if wd != 0.0 { g + wd * *p } else { g };
                *b = if first { d } else { mu * *b + damp * d };
                let d = if nesterov { d + mu * *b } else { *b };
                *p -= lr * d;
                bad |= !p.is_finite();
            }
        }
        Optimizer::Adam {
            betas,
            eps,
            weight_decay,
            ..
        }
        | Optimizer::AdamW {
            betas,
            eps,
            weight_decay,
            ..
        } => {
            let decoupled = matches!(settings, Optimizer::AdamW { .. });
            let bc1 = 1.0 - betas[0].powi(step as i32);
            let bc2 = 1.0 - betas[1].powi(step as i32);
            let step_size = (lr / bc1) as f32;
            let bc2_sqrt = bc2.sqrt() as f32;
            let (b1, b2, eps) = (betas[0] as f32, betas[1] as f32, eps as f32);
            let decay = (1.0 - lr * weight_decay) as f32;
            let wd = weight_decay as f32;
            for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                let g = if decoupled {
                    *p *= decay;
                    g
                } else if wd != 0.0 {
                    g + wd * *p
                } else {
                    g
                };
                // torch: exp_avg.lerp_(grad, 1 - beta1) = m + (1 - β1)(g - m)
                *m += (1.0 - b1) * (g - *m);
                *v = b2 * *v + (1.0 - b2) * g * g;
                let denom = v.sqrt() / bc2_sqrt + eps;
                *p -= step_size * (*m / denom);
                bad |= !p.is_finite();
            }
        }
    }
    !bad
}

/// The learning rate at a point of training: `epoch` (from 0) plus the fraction `frac` of it
/// done, evaluated at every step. A warmup rises linearly to `base` over the first `warmup`
/// epochs; then the schedule proper runs over the remaining epochs (step decay counts whole
/// epochs, cosine anneals continuously to `min_lr` at the end of the last epoch).
pub fn learning_rate(
    schedule: &Schedule,
    base: f64,
    epochs: usize,
    epoch: usize,
    frac: f64,
) -> f64 {
    learning_rate_in(schedule, base, &Horizon::new(schedule, epochs), epoch, frac)
}

/// Where a cosine schedule anneals: its progress (0 at the end of the warmup, 1 at the end) runs
/// linearly from `from_progress` at epoch `from_epoch` to 1 at the end of epoch `epochs`. A
/// fresh training is [`Horizon::new`]; a resumed one that changes the number of epochs
/// continues from where it stands ([`Horizon::extend`]), so its learning rate never jumps.
/// Constant and step schedules do not depend on the horizon.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Horizon {
    pub from_epoch: f64,
    pub from_progress: f64,
    pub epochs: usize,
}

impl Horizon {
    /// The horizon of a training of `epochs` epochs from the start.
    pub fn new(schedule: &Schedule, epochs: usize) -> Horizon {
        Horizon {
            from_epoch: warmup_of(schedule),
            from_progress: 0.0,
            epochs,
        }
    }

    /// The cosine's progress in `[0, 1]` at time `t` (epochs, fractional).
    pub fn progress_at(&self, t: f64) -> f64 {
        let span = (self.epochs as f64 - self.from_epoch).max(1e-9);
        (self.from_progress + (1.0 - self.from_progress) * ((t - self.from_epoch) / span))
            .clamp(0.0, 1.0)
    }

    /// This horizon moved to end at `epochs`, from time `t` on (a resumed training with
    /// another `--epochs`): still in the warmup, the schedule is planned over the new total
    /// (the warmup depends on time alone, so nothing jumps); after it, the cosine continues
    /// from its progress at `t` and now reaches its end (`min_lr`) at `epochs`. The learning
    /// rate is continuous at `t`; a training that had finished stays at `min_lr`, and so does
    /// one whose new end is not after `t`.
    pub fn extend(&self, schedule: &Schedule, t: f64, epochs: usize) -> Horizon {
        if epochs == self.epochs {
            return *self;
        }
        if t <= warmup_of(schedule) {
            return Horizon::new(schedule, epochs);
        }
        // Ending where training already is (or before): the schedule is over.
        let from_progress = if epochs as f64 <= t {
            1.0
        } else {
            self.progress_at(t)
        };
        Horizon {
            from_epoch: t,
            from_progress,
            epochs,
        }
    }

    /// Why a horizon read from a checkpoint cannot be one, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        let ok = self.from_epoch.is_finite()
            && self.from_epoch >= 0.0
            && (0.0..=1.0).contains(&self.from_progress);
        if ok {
            Ok(())
        } else {
            Err(format!(
                "the schedule's horizon (from epoch {} at progress {} to epoch {}) is not one \
                 (expected a finite from_epoch ≥ 0 and 0 ≤ from_progress ≤ 1)",
                self.from_epoch, self.from_progress, self.epochs
            ))
        }
    }
}

fn warmup_of(schedule: &Schedule) -> f64 {
    match *schedule {
        Schedule::Constant { warmup }
        | Schedule::Step { warmup, .. }
        | Schedule::Cosine { warmup, .. } => warmup as f64,
    }
}

/// [`learning_rate`] with the cosine's [`Horizon`] given.
pub fn learning_rate_in(
    schedule: &Schedule,
    base: f64,
    horizon: &Horizon,
    epoch: usize,
    frac: f64,
) -> f64 {
    let t = epoch as f64 + frac.clamp(0.0, 1.0);
    let warmup = warmup_of(schedule);
    if warmup > 0.0 && t < warmup {
        // Linear warmup over the first `warmup` epochs, never exactly zero.
        return base * (t + 1e-3).min(warmup) / warmup;
    }
    match *schedule {
        Schedule::Constant { .. } => base,
        Schedule::Step {
            step_size, gamma, ..
        } => base * gamma.powi((epoch / step_size.max(1)) as i32),
        Schedule::Cosine { min_lr, .. } => {
            let p = horizon.progress_at(t);
            min_lr + (base - min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules() {
        let cos = Schedule::Cosine {
            min_lr: 0.0,
            warmup: 0,
        };
        assert_eq!(learning_rate(&cos, 0.1, 10, 0, 0.0), 0.1);
        assert!((learning_rate(&cos, 0.1, 10, 5, 0.0) - 0.05).abs() < 1e-12);
        assert!(learning_rate(&cos, 0.1, 10, 9, 1.0).abs() < 1e-12);
        let step = Schedule::Step {
            step_size: 3,
            gamma: 0.1,
            warmup: 0,
        };
        assert!((learning_rate(&step, 1.0, 10, 2, 0.9) - 1.0).abs() < 1e-12);
        assert!((learning_rate(&step, 1.0, 10, 3, 0.0) - 0.1).abs() < 1e-12);
        assert!((learning_rate(&step, 1.0, 10, 6, 0.0) - 0.01).abs() < 1e-12);
        let warm = Schedule::Constant { warmup: 2 };
        assert!(learning_rate(&warm, 1.0, 10, 0, 0.0) > 0.0);
        assert!((learning_rate(&warm, 1.0, 10, 1, 0.0) - 0.5005).abs() < 1e-9);
        assert_eq!(learning_rate(&warm, 1.0, 10, 2, 0.0), 1.0);
    }

    #[test]
    fn sgd_first_step_takes_the_gradient_as_momentum() {
        let s = Optimizer::Sgd {
            lr: 0.1,
            momentum: 0.9,
            dampening: 0.5,
            nesterov: false,
            weight_decay: 0.0,
        };
        let mut st = OptimState::new(s, &[2]);
        let mut p = vec![1.0f32, 2.0];
        assert_eq!(st.update(&mut [&mut p], &[&[1.0, -1.0]], 0.1), None);
        // torch: buf = g on the first step (no dampening), p -= lr * buf
        assert_eq!(p, vec![0.9, 2.1]);
        assert_eq!(st.update(&mut [&mut p], &[&[1.0, -1.0]], 0.1), None);
        // buf = 0.9 * 1 + 0.5 * 1 = 1.4
        assert!((p[0] - (0.9 - 0.14)).abs() < 1e-6);
    }

    /// Every optimizer reports the first tensor that holds a NaN or an infinity after its
    /// update (from the gradient, the state or an overflowing step), on both sides of the
    /// two-thread split, and nothing for finite updates.
    #[test]
    fn updates_report_the_first_non_finite_tensor() {
        let sgd = |momentum| Optimizer::Sgd {
            lr: 0.1,
            momentum,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        };
        let adam = Optimizer::Adam {
            lr: 0.1,
            betas: [0.9, 0.999],
            eps: 1e-8,
            weight_decay: 0.0,
        };
        // Two tensors past the two-thread threshold, and two small ones.
        for n in [1 << 18, 5] {
            for settings in [sgd(0.0), sgd(0.9), adam.clone()] {
                for (bad_tensor, value) in [(0, f32::NAN), (1, f32::INFINITY), (1, 1e38)] {
                    let mut st = OptimState::new(settings.clone(), &[n, n]);
                    let mut a = vec![1.0f32; n];
                    let mut b = vec![1.0f32; n];
                    let (ga, gb) = (vec![0.5f32; n], vec![0.5f32; n]);
                    let finite = st.update(&mut [&mut a, &mut b], &[&ga, &gb], 0.1);
                    assert_eq!(finite, None, "{settings:?}");
                    let mut gbad = vec![0.5f32; n];
                    gbad[n - 1] = value;
                    let gs: [&[f32]; 2] = if bad_tensor == 0 {
                        [&gbad, &gb]
                    } else {
                        [&ga, &gbad]
                    };
                    // A finite gradient that overflows the step: SGD's `lr·g`; Adam's step
                    // is about `lr` whatever the gradient, so there both tensors overflow.
                    let is_adam = matches!(settings, Optimizer::Adam { .. });
                    let lr = match (value == 1e38, is_adam) {
                        (false, _) => 0.1,
                        (true, false) => 1e30,
                        (true, true) => 1e38,
                    };
                    let got = st.update(&mut [&mut a, &mut b], &gs, lr);
                    let want = if value == 1e38 && is_adam {
                        Some(0)
                    } else {
                        Some(bad_tensor)
                    };
                    assert_eq!(got, want, "{settings:?} n {n} {value}");
                }
            }
        }
    }
}
