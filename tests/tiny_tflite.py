"""A tiny Teachable-Machine-shaped TensorFlow Lite model, written by the tests with LiteRT's own flatbuffer schema.

Input [1, 224, 224, 3] float32 in [-1, 1] (Teachable Machine's), output [1, k] probabilities: the mean colour of
the picture through a fully connected layer and a softmax. With the weights below, class 0 means "red", class 1
"blue" — a plain signal the sorter tests can check. Needs `ai-edge-litert` (skipped where it is absent).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

RED_BLUE = np.array([[8.0, 0.0, -8.0], [-8.0, 0.0, 8.0]], dtype=np.float32)  # k × RGB


def write_model(path: Path, weights: np.ndarray = RED_BLUE, *, size: int = 224) -> Path:
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    k = weights.shape[0]
    buffers = [s.BufferT()]  # buffer 0: empty, by convention

    def const(data: np.ndarray) -> int:
        b = s.BufferT()
        b.data = list(np.ascontiguousarray(data).tobytes())
        buffers.append(b)
        return len(buffers) - 1

    def tensor(name: str, shape: list[int], kind: int, buffer: int = 0):
        t = s.TensorT()
        t.name, t.shape, t.type, t.buffer = name.encode(), shape, kind, buffer
        return t

    f32, i32 = s.TensorType.FLOAT32, s.TensorType.INT32
    tensors = [tensor("image", [1, size, size, 3], f32), tensor("axes", [2], i32, const(np.array([1, 2], np.int32))),
               tensor("mean", [1, 3], f32), tensor("weights", [k, 3], f32, const(weights.astype(np.float32))),
               tensor("bias", [k], f32, const(np.zeros(k, np.float32))), tensor("logits", [1, k], f32),
               tensor("probabilities", [1, k], f32)]

    def code(op: int):
        c = s.OperatorCodeT()
        c.builtinCode, c.deprecatedBuiltinCode, c.version = op, min(op, 127), 1
        return c

    def operator(index: int, inputs: list[int], outputs: list[int], kind: int, options):
        o = s.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs, o.builtinOptionsType, o.builtinOptions = index, inputs, outputs, kind, \
            options
        return o

    reducer = s.ReducerOptionsT()
    reducer.keepDims = False
    softmax = s.SoftmaxOptionsT()
    softmax.beta = 1.0
    graph = s.SubGraphT()
    graph.tensors, graph.inputs, graph.outputs = tensors, [0], [6]
    graph.operators = [operator(0, [0, 1], [2], s.BuiltinOptions.ReducerOptions, reducer),
                       operator(1, [2, 3, 4], [5], s.BuiltinOptions.FullyConnectedOptions,
                                s.FullyConnectedOptionsT()),
                       operator(2, [5], [6], s.BuiltinOptions.SoftmaxOptions, softmax)]
    model = s.ModelT()
    model.version, model.subgraphs, model.buffers = 3, [graph], buffers
    model.operatorCodes = [code(s.BuiltinOperator.MEAN), code(s.BuiltinOperator.FULLY_CONNECTED),
                           code(s.BuiltinOperator.SOFTMAX)]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(builder.Output()))
    return path
