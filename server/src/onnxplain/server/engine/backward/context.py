"""What a VJP rule sees while the backward graph is built: static shapes and constant values of the forward graph,
and one way to add nodes and constants to it.

Rules emit standard ai.onnx ops in the forms of the model's opset (the builder raises models below opset 16 to 16
first, so every rule may use input-form axes, Split sizes and ScatterElements reductions). Shapes are static where
shape inference knows them (the builder fixes the image size; only the batch stays symbolic), so constants replace
runtime Shape chains wherever possible.

A rule's numeric parameter (LRP's epsilon, gamma, alpha, beta, z-box bounds) is a Parameter: a float32 graph input
rather than a constant, so one graph serves every value a request picks and the value is fed at run time. Its
initializer of the same name is a default (the value the graph was built with) that a feed overrides; ONNX Runtime folds
no constant through an initializer that is also an input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxplain.server.engine.backward.graph import FreshNames
from onnxplain.server.engine.backward.signs import never_negative

Shape = tuple[int | None, ...]

# Graph inputs holding rule parameters are named under this prefix (as onnxplain_seed is), apart from the model's names.
PARAMETER_PREFIX = "onnxplain_param/"


@dataclass(frozen=True, eq=False)
class Parameter:
    """A number (or one per channel) that rules read from the float32 graph input `name`, fed at run time."""

    name: str
    value: np.ndarray

    @classmethod
    def named(cls, name: str, value: float | Sequence[float]) -> Parameter:
        return cls(PARAMETER_PREFIX + name, np.asarray(value, dtype=np.float32))


# What a rule takes for a number: a constant built into the graph, or a Parameter fed at run time.
Number = float | Parameter


class BackwardContext:
    def __init__(
        self,
        graph: onnx.GraphProto,
        opset: int,
        shapes: dict[str, Shape],
        dtypes: dict[str, int],
        needed: set[str],
    ) -> None:
        self.graph = graph
        self.opset = opset
        self._shapes = shapes
        self._dtypes = dtypes
        # Tensors whose gradient the walk needs: rules skip the VJPs of other inputs (weights, shapes, masks).
        self._needed = needed
        # Constant tensors by name, converted to numpy only when a rule asks: most are weights no rule reads, and
        # converting a ResNet-50's all up front copied 100 MB per build.
        self._constant_protos: dict[str, onnx.TensorProto] = {init.name: init for init in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
                self._constant_protos[node.output[0]] = node.attribute[0].t
        self._constants: dict[str, np.ndarray] = {}
        # The forward node computing each tensor (nodes the rules add later are not looked up).
        self._producers = {output: node for node in graph.node for output in node.output if output}
        # The forward nodes reading each tensor, indexed on first use (few rules ask): rules only append nodes, so the
        # forward ones stay the first `_forward_count`.
        self._forward_count = len(graph.node)
        self._consumers: dict[str, list[onnx.NodeProto]] | None = None
        self._never_negative: dict[str, bool] = {}
        # Parameter inputs declared so far, and their casts to other dtypes.
        self._parameters: dict[tuple[str, np.dtype], str] = {}
        # Constant nodes' outputs are node outputs: the graph's names cover every constant.
        self.fresh = FreshNames(graph, "onnxplain_bw")

    # What the forward graph says.

    def needs(self, name: str) -> bool:
        """Whether the walk wants the gradient of this tensor."""
        return name in self._needed

    def shape(self, name: str) -> Shape | None:
        """The static shape (None for unknown dimensions), or None when not even the rank is known."""
        if name in self._constant_protos:
            return tuple(self._constant_protos[name].dims)
        return self._shapes.get(name)

    def static_shape(self, name: str) -> tuple[int, ...]:
        """The shape when every dimension is known; rules that cannot work without one call this."""
        shape = self.shape(name)
        if shape is None or any(d is None for d in shape):
            raise UnknownShape(name, shape)
        return tuple(int(d) for d in shape)  # type: ignore[arg-type]

    def rank(self, name: str) -> int:
        shape = self.shape(name)
        if shape is None:
            raise UnknownShape(name, shape)
        return len(shape)

    def value(self, name: str) -> np.ndarray | None:
        """The value of an initializer or Constant output, else None."""
        if name not in self._constants and name in self._constant_protos:
            self._constants[name] = numpy_helper.to_array(self._constant_protos[name])
        return self._constants.get(name) if name else None

    def consumers(self, name: str) -> list[onnx.NodeProto]:
        """The forward nodes that read the tensor."""
        if self._consumers is None:
            self._consumers = {}
            for node in self.graph.node[: self._forward_count]:
                for used in set(node.input):
                    self._consumers.setdefault(used, []).append(node)
        return self._consumers.get(name, [])

    def never_negative(self, name: str) -> bool:
        """Whether the forward graph guarantees the tensor is >= 0 (a ReLU's output, a max pool of one...)."""
        return never_negative(name, self._producers.get, self.value, self._never_negative)

    def dtype(self, name: str) -> np.dtype:
        """The numpy dtype of a tensor (float32 when inference did not say)."""
        if name in self._constant_protos:
            return np.dtype(helper.tensor_dtype_to_np_dtype(self._constant_protos[name].data_type))
        elem = self._dtypes.get(name, onnx.TensorProto.FLOAT)
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem))

    # Adding to the graph.

    def constant(self, value: Any, like: str | None = None, hint: str = "const") -> str:
        """An initializer holding `value`, in the dtype of tensor `like` when given."""
        array = np.asarray(value, dtype=self.dtype(like) if like else None)
        name = self.fresh(hint)
        self.graph.initializer.append(numpy_helper.from_array(array, name))
        self._constant_protos[name] = self.graph.initializer[-1]
        self._constants[name] = array
        return name

    def parameter(self, parameter: Parameter, like: str) -> str:
        """The graph input of `parameter` (declared on first use, with its value as the default), in `like`'s dtype."""
        if (parameter.name, np.dtype(np.float32)) not in self._parameters:
            dims = list(parameter.value.shape)
            self.graph.input.append(helper.make_tensor_value_info(parameter.name, onnx.TensorProto.FLOAT, dims))
            self.graph.initializer.append(numpy_helper.from_array(parameter.value, parameter.name))
            self._parameters[parameter.name, np.dtype(np.float32)] = parameter.name
        dtype = self.dtype(like)
        if (parameter.name, dtype) not in self._parameters:
            element = helper.np_dtype_to_tensor_dtype(dtype)
            self._parameters[parameter.name, dtype] = self.op("Cast", [parameter.name], to=element)
        return self._parameters[parameter.name, dtype]

    @property
    def parameter_inputs(self) -> tuple[str, ...]:
        """The graph inputs the rules declared for Parameters. ONNX Runtime lists them among the overridable
        initializers, not the inputs (each has a default), so whoever feeds them needs their names from here."""
        return tuple(dict.fromkeys(name for name, _ in self._parameters))

    def number(self, value: Number, like: str) -> str:
        """A scalar constant, or a Parameter's input, in `like`'s dtype."""
        return self.parameter(value, like) if isinstance(value, Parameter) else self.scalar(value, like)

    def ints(self, values: Sequence[int], hint: str = "ints") -> str:
        return self.constant(np.asarray(values, dtype=np.int64), hint=hint)

    def op(self, op_type: str, inputs: Sequence[str], *, outputs: int = 1, hint: str | None = None, **attrs: Any):
        """Add one node; returns its output name, or the list of names when `outputs` > 1."""
        base = hint or op_type.lower()
        names = [self.fresh(base) for _ in range(outputs)]
        node = helper.make_node(op_type, list(inputs), names, name=self.fresh(f"{base}_node"), **attrs)
        self.graph.node.append(node)
        return names[0] if outputs == 1 else names

    def forward_output(self, node: onnx.NodeProto, index: int, hint: str) -> str:
        """The node's optional output `index`, added to the forward node when the export left it out
        (MaxPool's Indices)."""
        while len(node.output) <= index:
            node.output.append("")
        if not node.output[index]:
            node.output[index] = self.fresh(hint)
        return node.output[index]

    # Helpers many rules share.

    def shape_tensor(self, like: str) -> str:
        """A tensor holding `like`'s shape: a constant when static, a Shape node otherwise."""
        shape = self.shape(like)
        if shape is not None and all(d is not None for d in shape):
            return self.ints(shape, hint="shape")
        return self.op("Shape", [like])

    def reshape_like(self, grad: str, like: str) -> str:
        """`grad` reshaped to `like`'s shape (one unknown dimension becomes -1 in a constant shape)."""
        shape = self.shape(like)
        if shape is not None and sum(d is None for d in shape) <= 1:
            return self.op("Reshape", [grad, self.ints([-1 if d is None else d for d in shape])])
        return self.op("Reshape", [grad, self.op("Shape", [like])])

    def expand_like(self, grad: str, like: str) -> str:
        return self.op("Expand", [grad, self.shape_tensor(like)])

    def reduce_sum(self, x: str, axes: Sequence[int], keepdims: bool = True) -> str:
        if not axes:
            # ReduceSum with empty axes reduces everything: nothing to reduce means no node.
            return x
        return self.op("ReduceSum", [x, self.ints(sorted(axes))], keepdims=int(keepdims))

    def unbroadcast(self, grad: str, operand: str, output: str) -> str:
        """The gradient of a broadcast operand: sum over the axes it was broadcast along, then its own shape."""
        out_shape, in_shape = self.shape(output), self.shape(operand)
        if out_shape is None or in_shape is None:
            raise UnknownShape(operand, in_shape)
        lead = len(out_shape) - len(in_shape)
        axes = list(range(lead))
        axes += [lead + i for i, d in enumerate(in_shape) if d == 1 and out_shape[lead + i] != 1]
        if not axes and lead == 0:
            return grad
        return self.reshape_like(self.reduce_sum(grad, axes), operand)

    def scalar(self, value: float, like: str) -> str:
        return self.constant(np.asarray(value), like=like, hint="scalar")

    def zeros_like(self, like: str) -> str:
        return self.expand_like(self.scalar(0.0, like), like)

    def masked(self, condition: str, grad: str, like: str) -> str:
        """`grad` where the boolean `condition` holds, 0 elsewhere. Below opset 21 as grad · Cast(condition): on the
        CPU provider Where is about twice as slow as Cast and Mul together (measured on 16x64x112x112: Greater+Where
        31-34 ms, Greater+Cast+Mul 18.7 ms). From opset 21 the CUDA provider lacks Cast-21 (onnx-backward.md §6), so
        Where it is there."""
        if self.opset >= 21:
            return self.op("Where", [condition, grad, self.scalar(0.0, like)])
        element = helper.np_dtype_to_tensor_dtype(self.dtype(like))
        return self.op("Mul", [grad, self.op("Cast", [condition], to=element)])

    def sum(self, terms: Sequence[str]) -> str:
        return terms[0] if len(terms) == 1 else self.op("Sum", list(terms))


class UnknownShape(ValueError):
    """A rule needed a shape that shape inference could not give."""

    def __init__(self, name: str, shape: Shape | None) -> None:
        super().__init__(f"the shape of tensor {name!r} is not known statically ({shape})")
