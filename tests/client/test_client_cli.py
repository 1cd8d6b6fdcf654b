"""The `onnxplain` command: argument parsing, and each command against the fake service."""

import argparse
import json
from importlib.metadata import EntryPoint

import numpy as np
import pytest
from support.servers import free_port

from onnxplain.client.cli import plugins
from onnxplain.client.cli.arguments import parse_param, parse_param_value, parse_target, targets_argument
from onnxplain.client.cli.main import build_parser, main
from onnxplain.client.targets import TopK
from onnxplain.server.demo import SAMPLES


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("window=4,4", ("window", [4, 4])),
        ("window=4,", ("window", [4])),
        ("stdevs=0.1,0.2", ("stdevs", [0.1, 0.2])),
        ("steps=32", ("steps", 32)),
        ("alpha=0.5", ("alpha", 0.5)),
        ("abs=true", ("abs", True)),
        ("abs=False", ("abs", False)),
        ("baseline=blur", ("baseline", "blur")),
        ("baseline=a,b", ("baseline", "a,b")),
        ("empty=", ("empty", "")),
        (" key =x=y", ("key", "x=y")),
    ],
)
def test_param_values_are_typed(text, expected):
    assert parse_param(text) == expected


def test_typed_param_values_keep_their_python_type():
    assert type(parse_param_value("3")) is int
    assert type(parse_param_value("3.0")) is float


@pytest.mark.parametrize("text", ["window", "=4", ""])
def test_params_need_key_equals_value(text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_param(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("281", 281), ("tabby cat", "tabby cat"), ("top3", TopK(3)), ("TOP2", TopK(2)), ("topcat", "topcat")],
)
def test_targets_parse_as_index_label_or_top_k(text, expected):
    assert parse_target(text) == expected


@pytest.mark.parametrize("text", ["", "top0"])
def test_bad_targets_are_rejected(text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_target(text)


def test_one_plain_target_is_scalar_and_anything_more_is_a_list():
    assert targets_argument(None) is None
    assert targets_argument([5]) == 5
    assert targets_argument([TopK(1)]) == [TopK(1)]
    assert targets_argument([5, "dog"]) == [5, "dog"]


def test_explain_arguments_parse(monkeypatch):
    monkeypatch.setenv("ONNXPLAIN_SERVER", "remote:1234")
    command = "explain --model m --method occlusion --target top2 --target 7 --param window=4,4 --param abs=true"
    args = build_parser().parse_args([*command.split(), "-o", "out", "a.png", "b.png"])
    assert args.server == "remote:1234"
    assert args.targets == [TopK(2), 7]
    assert dict(args.params) == {"window": [4, 4], "abs": True}
    assert args.images == ["a.png", "b.png"]
    assert args.overlay is True


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["explain", "--model", "m", "a.png"])
    assert caught.value.code == 2
    with pytest.raises(SystemExit) as caught:
        main(["models", "--bogus"])
    assert caught.value.code == 2


def test_models_prints_a_table(server_address, capsys):
    assert main(["models", "--server", server_address]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "VERSION", "STATE", "REASON"]
    assert lines[2].split() == ["broken", "2", "unavailable", "bad", "graph"]


def test_metadata_prints_json(server_address, capsys):
    assert main(["metadata", "--server", server_address, "--model", "resnet"]) == 0
    metadata = json.loads(capsys.readouterr().out)
    assert metadata["labels"] == ["cat", "dog", "bird"]
    assert metadata["state"] == "ready"


def test_methods_lists_parameters(server_address, capsys):
    assert main(["methods", "--server", server_address]) == 0
    out = capsys.readouterr().out
    assert out.startswith("occlusion (perturbation): slides a patch")
    assert "window" in out and "= 8,8" in out


def test_predict_prints_top_classes_per_image(server_address, tmp_path, capsys):
    image = tmp_path / "cat.png"
    image.write_bytes(b"png")
    assert main(["predict", "--server", server_address, "--model", "resnet", "--top-k", "2", str(image)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(image)
    assert lines[2].split() == ["0", "cat", "3.0000", "0.5000"]
    assert main(["predict", "--server", server_address, "--model", "resnet", "--json", str(image)]) == 0
    assert json.loads(capsys.readouterr().out)[0]["top"][0]["label"] == "cat"


def test_explain_writes_maps_and_overlays(server_address, fake_service, tmp_path, capsys):
    image = tmp_path / "cat.png"
    image.write_bytes(b"png")
    out = tmp_path / "out"
    command = "explain --model resnet --method occlusion --target top2 --param window=4,4 --colormap inferno"
    code = main([*command.split(), "--server", server_address, "-o", str(out), str(image)])
    assert code == 0
    assert np.load(out / "cat.occlusion.npy").shape == (2, 4, 5)
    assert (out / "cat.occlusion.t0.png").read_bytes() == b"png-0"
    assert (out / "cat.occlusion.t1.png").read_bytes() == b"png-1"
    request = fake_service.requests[-1]
    assert request.render.colormap == "inferno"
    assert list(request.parameters["window"].numbers.values) == [4.0, 4.0]
    summary = capsys.readouterr().out
    assert summary.startswith(f"{image}: occlusion targets 0 (cat), 1 (dog); 20 forward passes, 0.25s")
    overlays = f"{out / 'cat.occlusion.t0.png'}, {out / 'cat.occlusion.t1.png'}"
    assert summary.rstrip().endswith(f"-> {out / 'cat.occlusion.npy'}, {overlays}")


def test_predict_and_explain_send_the_head_named_by_output(server_address, fake_service, tmp_path, capsys):
    image = tmp_path / "cat.png"
    image.write_bytes(b"png")
    connection = ["--server", server_address, "--model", "resnet"]
    assert main(["predict", *connection, "--output", "boxes", str(image)]) == 0
    assert (
        main(["explain", *connection, "--method", "occlusion", "--output", "boxes", "-o", str(tmp_path), str(image)])
        == 0
    )
    assert main(["explain", *connection, "--method", "occlusion", "-o", str(tmp_path), str(image)]) == 0
    assert [request.output for request in fake_service.requests] == ["boxes", "boxes", ""]


def test_explain_one_target_with_progress(server_address, tmp_path, capsys):
    image = tmp_path / "dog.jpg"
    image.write_bytes(b"jpg")
    out = tmp_path / "out"
    command = "explain --model resnet --method occlusion --target dog --progress"
    code = main([*command.split(), "--server", server_address, "-o", str(out), str(image)])
    assert code == 0
    assert np.load(out / "dog.occlusion.npy").shape == (4, 5)
    assert (out / "dog.occlusion.png").read_bytes() == b"png-1"
    assert "2/2 passes" in capsys.readouterr().err


def test_explain_refuses_params_that_shadow_options_and_clashing_stems(tmp_path, capsys):
    base = ["explain", "--model", "m", "--method", "occlusion", "-o", str(tmp_path)]
    assert main([*base, "--param", "method=x", "a.png"]) == 2
    assert "--param cannot set method" in capsys.readouterr().err
    assert main([*base, "a/cat.png", "b/cat.png"]) == 2
    assert "cat" in capsys.readouterr().err


def test_server_errors_exit_1_with_the_message(server_address, capsys):
    assert main(["metadata", "--server", server_address, "--model", "missing"]) == 1
    assert capsys.readouterr().err == "error: NOT_FOUND: model 'missing' not found\n"


def test_unreadable_images_exit_1(server_address, tmp_path, capsys):
    assert main(["predict", "--server", server_address, "--model", "m", str(tmp_path / "nope.png")]) == 1
    assert "nope.png" in capsys.readouterr().err


def test_an_unreachable_server_is_named_with_how_to_start_or_point_at_one(monkeypatch, capsys):
    target = f"127.0.0.1:{free_port()}"
    monkeypatch.setenv("ONNXPLAIN_SERVER", target)
    assert main(["models", "--no-retries"]) == 1
    error, hint = capsys.readouterr().err.splitlines()
    assert error.startswith(f"error: UNAVAILABLE: no server answered at {target} (")
    assert "`make serve`" in hint and "`onnxplain serve" in hint
    assert "--server HOST:PORT" in hint and "$ONNXPLAIN_SERVER" in hint


def test_explain_stops_at_a_failure_no_other_image_can_escape(server_address, fake_service, tmp_path, capsys):
    images = [tmp_path / "a.png", tmp_path / "b.png"]
    for image in images:
        image.write_bytes(b"png")
    command = ["explain", "--server", server_address, "--model", "missing", "--method", "occlusion"]
    assert main([*command, "-o", str(tmp_path / "out"), *map(str, images)]) == 1
    assert capsys.readouterr().err == "error: NOT_FOUND: model 'missing' not found\n"
    assert len(fake_service.requests) == 1


def test_explain_goes_on_past_a_segments_file_it_cannot_load(server_address, fake_service, tmp_path, capsys):
    images = [tmp_path / "a.png", tmp_path / "b.png"]
    for image in images:
        image.write_bytes(b"png")
    pickled, segments = tmp_path / "pickled.npy", tmp_path / "b.npy"
    np.save(pickled, np.array([{"not": "ids"}], dtype=object), allow_pickle=True)
    np.save(segments, np.zeros((4, 5), np.int32))
    command = ["explain", "--server", server_address, "--model", "resnet", "--method", "lime", "-o", str(tmp_path)]
    for missing_or_pickled, reason in ((tmp_path / "gone.npy", "No such file or directory"), (pickled, "not an .npy")):
        segment_files = ["--segments", str(missing_or_pickled), "--segments", str(segments)]
        assert main([*command, *segment_files, *map(str, images)]) == 1
        error = f"error: {images[0]}: INVALID_ARGUMENT: --segments {missing_or_pickled}: {reason}"
        assert capsys.readouterr().err.startswith(error)
    assert [len(request.images) for request in fake_service.requests] == [1, 1]
    assert all(request.images[0].HasField("segments") for request in fake_service.requests)


@pytest.mark.parametrize("streamed", [[], ["--progress"]])
def test_explain_goes_on_past_bad_files_names_them_and_sums_up(demo_server, tmp_path, capsys, streamed):
    garbage, missing = tmp_path / "notes.png", tmp_path / "gone.png"
    garbage.write_text("not a picture")
    images = [SAMPLES / "digit_6_strokes.png", garbage, missing, SAMPLES / "digit_3_clean.png"]
    out = tmp_path / "out"
    command = ["explain", "--server", demo_server.target, "--model", "digits", "--method", "saliency", "-o", str(out)]
    assert main([*command, *streamed, *map(str, images)]) == 1
    captured = capsys.readouterr()
    # Each error on a line of its own, never glued to the end of a progress line.
    assert [line for line in captured.err.splitlines() if "error" in line] == [
        f"error: {garbage}: INVALID_ARGUMENT: not a PNG, JPEG, BMP or WebP image",
        f"error: {missing}: INVALID_ARGUMENT: cannot read the image file: No such file or directory",
        f"error: 2 of 4 images explained; failed: {garbage}, {missing}",
    ]
    for line, stem in zip(captured.out.splitlines(), ("digit_6_strokes", "digit_3_clean"), strict=True):
        maps, overlay = out / f"{stem}.saliency.npy", out / f"{stem}.saliency.png"
        assert line.endswith(f"-> {maps}, {overlay}")
        assert np.load(maps).shape == (28, 28)
        assert overlay.read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("method", "warned"), [("saliency", True), ("grad_cam", True), ("integrated_gradients", False)]
)
def test_polarity_both_warns_when_the_map_has_no_negative_values(demo_server, tmp_path, capsys, method, warned):
    image = SAMPLES / "digit_6_strokes.png"
    command = ["explain", "--server", demo_server.target, "--model", "digits", "--method", method]
    assert main([*command, "--polarity", "both", "-o", str(tmp_path), str(image)]) == 0
    # The reference: the map the server sent, with or without negative values.
    assert bool(np.load(tmp_path / f"digit_6_strokes.{method}.npy").min() >= 0) is warned
    expected = f"warning: {image}: the {method} map has no negative values, so --polarity both has nothing to show"
    assert capsys.readouterr().err.startswith(expected) is warned


def test_serve_without_the_server_says_how_to_install_it(monkeypatch, capsys):
    monkeypatch.setattr(plugins, "entry_points", lambda group: [])
    assert main(["serve", "--port", "1", "--repository", "x"]) == 1
    assert capsys.readouterr().err == f"error: {plugins.SERVER_MISSING}\n"


def test_plugins_add_commands(monkeypatch, capsys):
    def register(subparsers):
        parser = subparsers.add_parser("serve")
        parser.add_argument("--port", type=int)
        parser.set_defaults(handler=lambda args: print(f"serving on {args.port}"))

    entry_point = EntryPoint("serve", "fake:register", plugins.ENTRY_POINT_GROUP)
    monkeypatch.setattr(EntryPoint, "load", lambda self: register)
    monkeypatch.setattr(plugins, "entry_points", lambda group: [entry_point])
    assert main(["serve", "--port", "7"]) == 0
    assert capsys.readouterr().out == "serving on 7\n"


def test_a_broken_plugin_reports_itself_only_when_used(monkeypatch, capsys):
    entry_point = EntryPoint("serve", "onnxplain_no_such_module:register", plugins.ENTRY_POINT_GROUP)
    monkeypatch.setattr(plugins, "entry_points", lambda group: [entry_point])
    assert build_parser().parse_args(["models"]).command == "models"
    assert main(["serve"]) == 1
    assert "'serve' command failed to load: No module named 'onnxplain_no_such_module'" in capsys.readouterr().err
