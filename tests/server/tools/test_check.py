"""`onnxplain check MODEL.onnx`, run as a user runs it, on model files as exporters write them: every method's line,
the input gradient against finite differences, and the exit status (0 all is well, 1 onnxplain failed on the model,
2 the check could not run)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from support.models import IR_VERSION, ChannelsLast, SmallCNN, WithSoftmax, export, mod_stem_cnn, write_model

from onnxplain.client.cli.main import main
from onnxplain.server.engine.gradients import BackwardResult, BackwardSession
from onnxplain.server.methods.base import Attribution
from onnxplain.server.methods.lrp import Lrp
from onnxplain.server.methods.occlusion import Occlusion
from onnxplain.server.methods.registry import METHODS
from onnxplain.server.methods.rise import Rise
from onnxplain.server.tools.finite_differences import DIRECTIONS

SIZE = 16
AGREEMENT = re.compile(
    r"^input gradient vs finite differences: max relative error (\S+) .*\(tolerance (\S+)\): ok$", re.MULTILINE
)
GRADIENT_METHODS = ("gradient", "saliency", "integrated_gradients", "smoothgrad", "lrp", "guided_backprop")
PERTURBATION_METHODS = ("occlusion", "rise", "lime", "kernel_shap", "feature_ablation", "prediction_difference")


def check(capsys, *arguments: str) -> tuple[int, str, str]:
    """The command in this process: exit status, stdout, stderr."""
    status = main(["check", *arguments])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def method_lines(output: str) -> dict[str, str]:
    """Each method's line of the report, by method name."""
    return {line.split()[0]: line for line in output.splitlines() if line.split() and line.split()[0] in METHODS}


def saved(tmp_path: Path, model: bytes | onnx.ModelProto, name: str = "model.onnx") -> str:
    path = tmp_path / name
    path.write_bytes(model if isinstance(model, bytes) else model.SerializeToString())
    return str(path)


@pytest.fixture(scope="module")
def cnn_file(tmp_path_factory) -> str:
    return saved(tmp_path_factory.mktemp("cnn"), export(SmallCNN(), (1, 3, SIZE, SIZE)))


def test_every_method_runs_on_a_small_cnn(capsys, cnn_file: str) -> None:
    status, out, err = check(capsys, cnn_file)
    assert status == 0, out + err
    lines = method_lines(out)
    assert sorted(lines) == sorted(METHODS)
    for line in lines.values():
        assert line.split()[1] == "ok", line
        assert re.search(r"\d+\.\d+x forward", line), line
    agreement = AGREEMENT.search(out)
    assert agreement is not None, out
    assert float(agreement.group(1)) < float(agreement.group(2))
    assert "0 failed" in out.splitlines()[-1]


def test_the_console_script_reports_json(cnn_file: str) -> None:
    script = Path(sys.executable).with_name("onnxplain")
    result = subprocess.run(
        [str(script), "check", cnn_file, "--methods", "gradient,occlusion", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["exit_code"] == 0
    assert [(m["name"], m["verdict"]) for m in report["methods"]] == [("gradient", "ok"), ("occlusion", "ok")]
    gradient = report["gradient"]
    assert gradient["verdict"] == "agrees" and len(gradient["directions"]) == DIRECTIONS
    assert gradient["max_relative_error"] < gradient["tolerance"]
    assert report["forward_seconds"] > 0 and report["methods"][1]["seconds"] > 0


def paddle_style(model: bytes) -> bytes:
    """Every dynamic dimension written as dim_value -1, as Paddle2ONNX writes them."""
    proto = onnx.load_from_string(model)
    for value in (*proto.graph.input, *proto.graph.output):
        for dim in value.type.tensor_type.shape.dim:
            if not dim.HasField("dim_value"):
                dim.Clear()
                dim.dim_value = -1
    return proto.SerializeToString()


@pytest.mark.parametrize(
    ("model", "options"),
    [
        pytest.param(lambda: export(SmallCNN(), (1, 3, SIZE, SIZE), opset=11), (), id="opset11"),
        pytest.param(lambda: export(ChannelsLast(SmallCNN()), (1, SIZE, SIZE, 3)), (), id="nhwc"),
        pytest.param(
            lambda: export(WithSoftmax(SmallCNN()), (1, 3, SIZE, SIZE), dynamic_batch=False),
            (),
            id="softmax-fixed-batch",
        ),
        pytest.param(
            lambda: export(SmallCNN(), (1, 3, SIZE, SIZE), dynamic_spatial=True), ("--size", "24", "20"), id="dynamic"
        ),
        pytest.param(
            # The opset is raised after the image size is fixed: raised first, the version converter stamped
            # zero-sized shapes on the graph.
            lambda: paddle_style(export(SmallCNN(), (1, 3, SIZE, SIZE), opset=11, dynamic_spatial=True)),
            ("--size", "24", "20"),
            id="paddle-dynamic-opset11",
        ),
    ],
)
def test_the_gradient_agrees_with_finite_differences(capsys, tmp_path: Path, model, options) -> None:
    status, out, err = check(capsys, saved(tmp_path, model()), "--methods", "gradient", *options)
    assert status == 0, out + err
    agreement = AGREEMENT.search(out)
    assert agreement is not None, out
    assert float(agreement.group(1)) < float(agreement.group(2))
    assert method_lines(out)["gradient"].split()[1] == "ok"


def test_a_dynamic_image_size_needs_size(capsys, tmp_path: Path) -> None:
    path = saved(tmp_path, export(SmallCNN(), (1, 3, SIZE, SIZE), dynamic_spatial=True))
    status, _, err = check(capsys, path, "--methods", "gradient")
    assert status == 2
    assert "--size H W" in err


def test_a_rule_less_op_is_named_and_perturbation_methods_still_run(capsys, tmp_path: Path) -> None:
    methods = ",".join((*GRADIENT_METHODS, *PERTURBATION_METHODS, "grad_cam"))
    status, out, err = check(capsys, saved(tmp_path, mod_stem_cnn(SIZE)), "--methods", methods)
    assert status == 0, out + err
    lines = method_lines(out)
    for name in GRADIENT_METHODS:
        verdict, note = lines[name].split(maxsplit=3)[1], lines[name]
        assert verdict == "unsupported", note
        assert "Mod" in note and "stem_wrap" in note, note
    for name in (*PERTURBATION_METHODS, "grad_cam"):  # Grad-CAM differentiates from the scores to the feature map
        assert lines[name].split()[1] == "ok", lines[name]
    assert re.search(r"^input gradient vs finite differences: not checked: .*Mod.*stem_wrap", out, re.M), out


def test_a_method_that_raises_is_reported_and_fails_the_check(capsys, cnn_file: str, monkeypatch) -> None:
    def broken(self, job, params):
        raise RuntimeError("the plan fell over")

    monkeypatch.setattr(Occlusion, "attribute", broken)
    status, out, err = check(capsys, cnn_file, "--methods", "occlusion,gradient")
    assert status == 1, out + err
    lines = method_lines(out)
    assert lines["occlusion"].split()[1] == "failed"
    assert "RuntimeError: the plan fell over" in lines["occlusion"]
    assert lines["gradient"].split()[1] == "ok"
    assert "please report it" in out.splitlines()[-1]


def test_non_finite_maps_fail_the_check(capsys, cnn_file: str, monkeypatch) -> None:
    def not_a_number(self, job, params):
        return Attribution(np.full((1, SIZE, SIZE), np.nan, dtype=np.float32))

    monkeypatch.setattr(Rise, "attribute", not_a_number)
    status, out, err = check(capsys, cnn_file, "--methods", "rise")
    assert status == 1, out + err
    assert f"computed {SIZE * SIZE} non-finite values" in method_lines(out)["rise"]


def test_a_wrong_gradient_fails_the_check(capsys, cnn_file: str, monkeypatch) -> None:
    """A backward graph whose gradient is off by a factor disagrees with finite differences along every direction."""
    run = BackwardSession.run

    def doubled(self, images, seeds, token=None, ranks=None) -> BackwardResult:
        result = run(self, images, seeds, token, ranks)
        return BackwardResult(result.scores, 2 * result.input_gradient, result.layer, result.layer_gradient)

    monkeypatch.setattr(BackwardSession, "run", doubled)
    status, out, err = check(capsys, cnn_file, "--methods", "gradient")
    assert status == 1, out + err
    assert re.search(r"^input gradient vs finite differences: max relative error .*: DISAGREES$", out, re.M), out


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"not a protobuf", "is not a readable ONNX model"), (None, "no such file")],
    ids=["garbage", "missing"],
)
def test_an_unloadable_file_exits_2_with_the_reason(capsys, tmp_path: Path, content, reason: str) -> None:
    path = tmp_path / "model.onnx"
    if content is not None:
        path.write_bytes(content)
    status, out, err = check(capsys, str(path))
    assert status == 2 and out == ""
    assert reason in err


def test_an_unknown_method_is_a_usage_error(capsys, cnn_file: str) -> None:
    status, _, err = check(capsys, cnn_file, "--methods", "gradient,telepathy")
    assert status == 2
    assert "telepathy" in err and "occlusion" in err


def two_head_cnn() -> onnx.ModelProto:
    """Conv -> Relu -> GlobalAveragePool, then two plain heads: 'head_a' (3 values) and 'head_b' (7 classes)."""
    rng = np.random.default_rng(5)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["input", "kernel"], ["conv"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["conv"], ["features"]),
            helper.make_node("GlobalAveragePool", ["features"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
            helper.make_node("Gemm", ["flat", "weights_a"], ["head_a"], transB=1),
            helper.make_node("Gemm", ["flat", "weights_b"], ["head_b"], transB=1),
        ],
        "two_heads",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])],
        [
            helper.make_tensor_value_info("head_a", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("head_b", TensorProto.FLOAT, ["batch", 7]),
        ],
        [
            numpy_helper.from_array(rng.normal(size=(6, 3, 3, 3)).astype(np.float32), "kernel"),
            numpy_helper.from_array(rng.normal(size=(3, 6)).astype(np.float32), "weights_a"),
            numpy_helper.from_array(rng.normal(size=(7, 6)).astype(np.float32), "weights_b"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=IR_VERSION)


def test_config_chooses_the_head_that_is_checked(capsys, tmp_path: Path) -> None:
    path = saved(tmp_path, two_head_cnn())
    status, _, err = check(capsys, path, "--methods", "gradient")
    assert status == 2
    assert "output: {name: <output>}" in err  # the loader's reason: neither head looks like class scores
    config = tmp_path / "config.yaml"
    config.write_text("output: {name: head_b}\n")
    status, out, err = check(capsys, path, "--config", str(config), "--methods", "gradient,occlusion")
    assert status == 0, out + err
    assert "explaining output 'head_b': 7 classes, logits" in out
    assert AGREEMENT.search(out) is not None, out


def test_a_repository_model_gets_the_config_beside_its_version_folder(capsys, tmp_path: Path) -> None:
    """The config's preprocessing makes the probe (resize, then crop to the model's size) and its output choice
    names the head, as the server would read them."""
    config = {"output": {"name": "head_b"}, "preprocessing": {"resize": [20, 20], "center_crop": [SIZE, SIZE]}}
    path = write_model(tmp_path, "heads", two_head_cnn().SerializeToString(), config=config)
    status, out, err = check(capsys, str(path), "--methods", "gradient,lime")
    assert status == 0, out + err
    assert "explaining output 'head_b': 7 classes" in out
    assert f"picture through the config's preprocessing (3x{SIZE}x{SIZE})" in out


def stopped_after(line: str) -> int:
    """Of a stopped method's line: how many of its 2000 passes ran; its estimated time must be positive."""
    stopped = re.search(r"^\w+ +stopped +~(\S+)x forward +stopped after (\d+) of its 2000 passes", line)
    assert stopped is not None, line
    assert float(stopped.group(1)) > 0
    return int(stopped.group(2))


def test_a_call_whose_passes_grow_with_the_classes_is_stopped_after_its_first_batch_on_built_graphs(
    capsys, tmp_path: Path
) -> None:
    """CLEAR runs one backward row per class (of its DeconvNet graph): on a 2000-class model the check stops it after
    its first batch and estimates the whole call's time from that batch; when the call builds that graph itself, the
    first batch's time is the build's too, and it is stopped after its second. DeconvNet, asked for after it, is
    tried first and builds the graph, and the report keeps the order asked for."""
    path = saved(tmp_path, export(SmallCNN(classes=2000), (1, 3, SIZE, SIZE)))
    status, out, err = check(capsys, path, "--methods", "clear,gradient")
    assert status == 0, out + err
    builds_its_graph = stopped_after(method_lines(out)["clear"])
    assert method_lines(out)["gradient"].split()[1] == "ok"
    status, out, err = check(capsys, path, "--methods", "clear,deconvnet")
    assert status == 0, out + err
    assert list(method_lines(out)) == ["clear", "deconvnet"]
    graph_built_before = stopped_after(method_lines(out)["clear"])
    assert 0 < graph_built_before < builds_its_graph == 2 * graph_built_before < 2000


def test_a_method_is_called_again_only_when_its_first_call_built_a_graph(capsys, cnn_file: str, monkeypatch) -> None:
    """Occlusion runs on the model's own session and LRP's first call builds its backward graph: the check times
    occlusion's only call, and LRP's second, on the graph the first built."""
    calls: dict[str, int] = {}
    for method in (Occlusion, Lrp):
        original = method.attribute

        def counted(self, job, params, original=original):
            calls[self.name] = calls.get(self.name, 0) + 1
            return original(self, job, params)

        monkeypatch.setattr(method, "attribute", counted)
    status, out, err = check(capsys, cnn_file, "--methods", "occlusion,lrp")
    assert status == 0, out + err
    assert calls == {"occlusion": 1, "lrp": 2}
