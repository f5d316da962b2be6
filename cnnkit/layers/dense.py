"""Fully connected layer: y = x @ kernel + bias on a flat (N, features) input."""

from __future__ import annotations

from pydantic import PositiveFloat, PositiveInt

from .base import Layer, LayerParams, Weight, kernel_init


class Dense(Layer):
    class Params(LayerParams):
        units: PositiveInt
        use_bias: bool = True
        init_std: PositiveFloat | None = None  # kernel ~ N(0, init_std^2); None: Glorot-uniform

    def output_shape(self, input_shape):
        if len(input_shape) != 1:
            raise ValueError(f"dense expects a flat input (features,); add a flatten layer before it. Received: input_shape={list(input_shape)}")
        return (self.params.units,)

    def weights(self, input_shape):
        fan_in, units = input_shape[0], self.params.units
        kernel = Weight((fan_in, units), kernel_init(fan_in, units, self.params.init_std))  # (in, out), as in Keras
        return {"kernel": kernel, "bias": Weight((units,))} if self.params.use_bias else {"kernel": kernel}

    def forward(self, weights, x, ctx):
        kernel = weights["kernel"]
        y = x @ kernel  # (N, units)
        if self.params.use_bias:
            y += weights["bias"]

        def backprop(dy):
            # Transposed products ((dy.T @ x).T, not x.T @ dy) keep numpy on its fast GEMM path (3-10x here).
            grads = {"kernel": (dy.T @ x).T}
            if self.params.use_bias:
                grads["bias"] = dy.sum(axis=0)
            return ((kernel @ dy.T).T if ctx.input_grad else None), grads

        return y, backprop

    def to_onnx(self, g, x, weights, input_shape):
        y = g.node("MatMul", [x, g.constant(weights["kernel"], "kernel")])  # kernel (in, out), as MatMul wants
        return g.node("Add", [y, g.constant(weights["bias"], "bias")]) if self.params.use_bias else y

    def to_torch(self, t, weights, input_shape):
        linear = t.nn.Linear(input_shape[0], self.params.units, bias=self.params.use_bias)
        t.set(linear.weight, weights["kernel"].T)  # torch keeps (out, in)
        if self.params.use_bias:
            t.set(linear.bias, weights["bias"])
        return linear

    def from_torch(self, t, module, input_shape):
        return {"kernel": t.array(module.weight).T.copy()} | ({"bias": t.array(module.bias)} if self.params.use_bias else {})
