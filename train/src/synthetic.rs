//! Seeded random weights and batch-norm statistics, independent of the backend's own
//! RNG: the parity suite and the fixtures need models whose every number is
//! reproducible and whose batch norms are far from identity.

use burn::module::Param;
use burn::module::RunningState;
use burn::nn::BatchNorm;
use burn::nn::conv::Conv2d;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::layers::{LayerValues, map_layers};
use crate::model::ResFcn;

struct Randomizer {
    rng: StdRng,
}

impl Randomizer {
    fn uniform<B: Backend, const D: usize>(
        &mut self,
        shape: [usize; D],
        lo: f32,
        hi: f32,
        device: &B::Device,
    ) -> Tensor<B, D> {
        let n = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| self.rng.random_range(lo..hi)).collect();
        Tensor::from_data(TensorData::new(v, shape), device)
    }

    fn random_conv<B: Backend>(&mut self, c: Conv2d<B>) -> Conv2d<B> {
        let w = c.weight.val();
        let device = w.device();
        let dims = w.dims();
        let fan_in = (dims[1] * dims[2] * dims[3]) as f32;
        let a = (3.0 / fan_in).sqrt();
        let weight = Param::from_tensor(self.uniform(dims, -a, a, &device));
        let bias = c
            .bias
            .as_ref()
            .map(|b| Param::from_tensor(self.uniform(b.val().dims(), -0.1, 0.1, &device)));
        Conv2d { weight, bias, ..c }
    }

    fn random_bn<B: Backend>(&mut self, bn: BatchNorm<B>) -> BatchNorm<B> {
        let device = bn.gamma.val().device();
        let c = bn.gamma.val().dims();
        BatchNorm {
            gamma: Param::from_tensor(self.uniform(c, 0.5, 1.5, &device)),
            beta: Param::from_tensor(self.uniform(c, -0.3, 0.3, &device)),
            running_mean: RunningState::new(self.uniform(c, -0.5, 0.5, &device)),
            running_var: RunningState::new(self.uniform(c, 0.5, 2.0, &device)),
            ..bn
        }
    }
}

impl<B: Backend> LayerValues<B> for Randomizer {
    type Error = std::convert::Infallible;

    fn conv(&mut self, _name: &str, c: Conv2d<B>) -> Result<Conv2d<B>, Self::Error> {
        Ok(self.random_conv(c))
    }

    fn bn(&mut self, _name: &str, bn: BatchNorm<B>) -> Result<BatchNorm<B>, Self::Error> {
        Ok(self.random_bn(bn))
    }
}

/// Replace every weight, bias and batch-norm statistic of `model` with seeded random
/// values: conv weights uniform with variance 1/fan-in, biases in [-0.1, 0.1), batch-norm
/// scale in [0.5, 1.5), shift in [-0.3, 0.3), running mean in [-0.5, 0.5) and running
/// variance in [0.5, 2).
pub fn randomize<B: Backend>(model: ResFcn<B>, seed: u64) -> ResFcn<B> {
    let mut r = Randomizer {
        rng: StdRng::seed_from_u64(seed),
    };
    match map_layers(model, &mut r) {
        Ok(m) => m,
        Err(never) => match never {},
    }
}

/// A seeded uniform random input in [-2, 2) of shape `[1, channels, h, w]`.
pub fn random_input(channels: usize, h: usize, w: usize, seed: u64) -> ndarray::Array4<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    ndarray::Array4::from_shape_simple_fn((1, channels, h, w), || rng.random_range(-2.0..2.0))
}
