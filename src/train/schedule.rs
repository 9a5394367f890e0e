//! Learning-rate schedules: the paper's "divide by 10 when the validation error stops improving"
//! (§5), or fixed epochs at which to divide (what the released `net145` log shows).

use super::checkpoint::TrainState;
use anyhow::{Context, Result, bail};

#[derive(Clone, Debug, PartialEq)]
pub enum Schedule {
    /// Divide by 10 after `patience` epochs without a new best validation error, at most
    /// `max_drops` times (the paper: three).
    Plateau {
        patience: usize,
        max_drops: usize,
    },
    /// Divide by 10 at the end of each listed epoch (counted from 1).
    Epochs(Vec<usize>),
    Constant,
}

impl std::str::FromStr for Schedule {
    type Err = anyhow::Error;
    /// `plateau`, `plateau:PATIENCE`, `epochs:25,51`, or `constant`.
    fn from_str(s: &str) -> Result<Schedule> {
        let (kind, arg) = s.split_once(':').unwrap_or((s, ""));
        match (kind, arg) {
            ("plateau", "") => Ok(Schedule::Plateau {
                patience: 1,
                max_drops: 3,
            }),
            ("plateau", p) => Ok(Schedule::Plateau {
                patience: p
                    .parse()
                    .with_context(|| format!("plateau patience {p:?}"))?,
                max_drops: 3,
            }),
            ("epochs", list) => {
                let epochs = list
                    .split(',')
                    .map(|e| {
                        e.trim()
                            .parse::<usize>()
                            .with_context(|| format!("epoch {e:?} in {s:?}"))
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(Schedule::Epochs(epochs))
            }
            ("constant", "") => Ok(Schedule::Constant),
            _ => bail!(
                "unknown learning-rate schedule {s:?}: use plateau[:PATIENCE], epochs:E1,E2,... or constant"
            ),
        }
    }
}

impl Schedule {
    /// Updates `state` after epoch `state.epoch` (counted from 0) finished with validation top-1
    /// error `val_error`; returns a message when the rate changed.
    pub fn end_of_epoch(&self, state: &mut TrainState, val_error: Option<f64>) -> Option<String> {
        let finished = state.epoch + 1;
        let improved = match (val_error, state.best_val_error) {
            (Some(e), Some(best)) => e < best,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if improved {
            state.best_val_error = val_error;
            state.epochs_since_best = 0;
        } else {
            state.epochs_since_best += 1;
        }
        let drop = match self {
            Schedule::Plateau {
                patience,
                max_drops,
            } => {
                val_error.is_some()
                    && state.epochs_since_best >= *patience
                    && state.lr_drops < *max_drops
            }
            Schedule::Epochs(at) => at.contains(&finished),
            Schedule::Constant => false,
        };
        if !drop {
            return None;
        }
        let old = state.lr;
        state.lr /= 10.0;
        state.lr_drops += 1;
        state.epochs_since_best = 0;
        Some(format!(
            "epoch {finished}: learning rate {old:e} -> {:e}",
            state.lr
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> TrainState {
        TrainState {
            lr: 0.01,
            ..TrainState::default()
        }
    }

    #[test]
    fn plateau_divides_after_patience_epochs_without_improvement_at_most_three_times() {
        let sched: Schedule = "plateau:2".parse().unwrap();
        let mut s = state();
        let mut drops = Vec::new();
        for (epoch, err) in [0.9, 0.8, 0.85, 0.81, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7]
            .into_iter()
            .enumerate()
        {
            s.epoch = epoch;
            if sched.end_of_epoch(&mut s, Some(err)).is_some() {
                drops.push(epoch + 1);
            }
        }
        // Epochs 3 and 4 do not beat 0.8: drop after 4. 0.7 is a new best at 5; 6, 7 do not
        // improve: drop after 7; again after 9; then the three drops are spent.
        assert_eq!(drops, [4, 7, 9]);
        assert!((s.lr - 0.01e-3).abs() < 1e-12);
    }

    #[test]
    fn fixed_epochs_and_parse_errors() {
        let sched: Schedule = "epochs:1,3".parse().unwrap();
        let mut s = state();
        let drops: Vec<bool> = (0..4)
            .map(|e| {
                s.epoch = e;
                sched.end_of_epoch(&mut s, None).is_some()
            })
            .collect();
        assert_eq!(drops, [true, false, true, false]);
        assert!(
            "steps:3"
                .parse::<Schedule>()
                .unwrap_err()
                .to_string()
                .contains("unknown learning-rate schedule")
        );
        assert!("epochs:3,x".parse::<Schedule>().is_err());
    }
}
