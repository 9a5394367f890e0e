//! Scoring a network on an evaluation set: top-1 and top-5 error and loss, the softmax averaged
//! over each image's views; for replicas, each scores its share and the sums are added up.

use super::batches::EvalBatches;
use crate::device::Device;
use crate::engine::Network;
use crate::ops::softmax::top_k_errors;
use anyhow::Result;

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EvalResult {
    pub images: usize,
    pub top1_error: f64,
    pub top5_error: f64,
    pub loss: f64,
}

/// Scores every image of `data` and returns its top-1 and top-5 error.
pub fn evaluate<D: Device>(net: &mut Network<D>, data: &mut dyn EvalBatches) -> Result<EvalResult> {
    score(net, data)?.result()
}

/// What evaluating some images adds up to, before dividing by their count (so that replicas
/// that each scored their share can add theirs).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EvalSums {
    pub images: usize,
    pub top1: usize,
    pub top5: usize,
    pub loss: f64,
}

impl EvalSums {
    pub fn result(self) -> Result<EvalResult> {
        let images = self.images;
        anyhow::ensure!(
            images > 0,
            "no image of the evaluation set could be read (each skipped file is named above)"
        );
        Ok(EvalResult {
            images,
            top1_error: self.top1 as f64 / images as f64,
            top5_error: self.top5 as f64 / images as f64,
            loss: self.loss / images as f64,
        })
    }
}

/// The sums over every batch of `data`.
pub(super) fn score<D: Device>(
    net: &mut Network<D>,
    data: &mut dyn EvalBatches,
) -> Result<EvalSums> {
    let classes = net.plan().classes;
    let views = data.views();
    data.restart()?;
    let mut sums = EvalSums::default();
    while let Some(batch) = data.next_batch()? {
        let n = batch.labels.len();
        let probs = net.predict(&batch.images, n * views)?;
        let mut mean = vec![0.0f32; n * classes];
        for (i, m) in mean.chunks_mut(classes).enumerate() {
            for v in 0..views {
                let p = &probs[(i * views + v) * classes..][..classes];
                m.iter_mut()
                    .zip(p)
                    .for_each(|(m, p)| *m += p / views as f32);
            }
        }
        sums.top1 += top_k_errors(n, classes, &mean, &batch.labels, 1);
        sums.top5 += top_k_errors(n, classes, &mean, &batch.labels, 5.min(classes));
        sums.loss -= batch
            .labels
            .iter()
            .enumerate()
            .map(|(i, &l)| (mean[i * classes + l as usize].max(1e-30) as f64).ln())
            .sum::<f64>();
        sums.images += n;
    }
    Ok(sums)
}
