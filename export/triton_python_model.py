"""Triton Python-backend model that runs a ganserve ONNX file with ONNX Runtime.

Copied as ``model.py`` into each model of the local repository by ``ganserve triton``, because the
``tritonserver`` bundled with nvidia-pytriton has only the Python backend. Requests that Triton's
dynamic batcher hands over together run as one ONNX Runtime call; each request gets back only the
outputs it asked for.
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        threads = int(
            config.get("parameters", {}).get("ort_intra_op_threads", {}).get("string_value", "0")
        )
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(
            os.path.join(version_dir, "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def execute(self, requests):
        sizes, columns = [], {name: [] for name in self.input_names}
        for request in requests:
            for name in self.input_names:
                array = pb_utils.get_input_tensor_by_name(request, name).as_numpy()
                if name == "label":
                    array = array.reshape(-1)  # dims [1] in the config, [N] in the model
                columns[name].append(array)
            sizes.append(len(columns[self.input_names[0]][-1]))
        wanted = set()
        for request in requests:
            wanted.update(request.requested_output_names() or self.output_names)
        names = [n for n in self.output_names if n in wanted]
        try:
            feeds = {name: np.concatenate(parts) for name, parts in columns.items()}
            results = dict(zip(names, self.session.run(names, feeds), strict=True))
        except Exception as exc:  # noqa: BLE001 - every request of the batch gets the error
            error = pb_utils.TritonError(f"onnxruntime: {exc}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in requests]
        responses, start = [], 0
        for request, size in zip(requests, sizes, strict=True):
            asked = request.requested_output_names() or names
            tensors = [
                pb_utils.Tensor(n, np.ascontiguousarray(results[n][start : start + size]))
                for n in asked
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += size
        return responses
