//! Conversions between `ndarray` arrays (the runtime's currency) and burn tensors.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use ndarray::Array4;

/// `[N, C, H, W]` array -> burn tensor.
pub fn from_array<B: Backend>(a: &Array4<f32>, device: &B::Device) -> Tensor<B, 4> {
    let shape = a.shape().to_vec();
    let data: Vec<f32> = a.iter().copied().collect();
    Tensor::from_data(TensorData::new(data, shape), device)
}

/// burn tensor -> `[N, C, H, W]` array.
pub fn to_array<B: Backend>(t: Tensor<B, 4>) -> Array4<f32> {
    let [n, c, h, w] = t.dims();
    let v = t
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("float tensor converts to f32");
    Array4::from_shape_vec((n, c, h, w), v).expect("tensor data matches its shape")
}
