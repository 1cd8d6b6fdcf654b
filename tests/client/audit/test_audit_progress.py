"""The progress bar: images done, this run's rate, the ETA; redrawn on a terminal, a line now and then otherwise."""

import io

from onnxplain.client.audit.progress import ProgressBar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_terminal_gets_one_redrawn_line_with_rate_and_eta():
    stream, clock = Terminal(), Clock()
    bar = ProgressBar(total=10, done=4, stream=stream, clock=clock)
    clock.now += 2.0
    bar.advance()
    clock.now += 2.0
    bar.advance()
    bar.finish()
    lines = stream.getvalue().split("\r")
    # Two images in four seconds: 0.5 images/s; the four an earlier run did do not count toward the rate.
    assert lines[-1] == "[##################............] 6/10 images  0.5 img/s  ETA 00:08\n"
    assert lines[1].startswith("[###############...............] 5/10 images  0.5 img/s  ETA 00:10")


def test_a_log_file_gets_plain_lines_at_most_every_ten_seconds_and_the_last_one():
    stream, clock = io.StringIO(), Clock()
    bar = ProgressBar(total=4, stream=stream, clock=clock)
    for step in (1.0, 1.0, 20.0, 1.0):
        clock.now += step
        bar.advance()
    bar.finish()
    lines = stream.getvalue().splitlines()
    assert [line.split("] ")[1].split(" images")[0] for line in lines] == ["1/4", "3/4", "4/4"]
    assert "\r" not in stream.getvalue()
    assert lines[-1].endswith("ETA 00:00")


def test_the_eta_is_unknown_before_anything_finished_and_hours_show_when_needed():
    clock = Clock()
    bar = ProgressBar(total=10_000, stream=io.StringIO(), clock=clock)
    assert bar.status(0.0).endswith("0.0 img/s  ETA --:--")
    bar.done = 1
    assert bar.status(1.0).endswith("ETA 2:46:39")
