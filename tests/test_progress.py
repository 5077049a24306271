import io

from tqdm.std import tqdm as std_tqdm

from plasticnet.progress import LogProgress, progress_bar


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_log_progress_prints_a_line_per_interval_and_one_at_close():
    out, clock = io.StringIO(), Clock()
    bar = LogProgress(100, initial=10, desc="run", file=out, interval=60.0, clock=clock)
    for _ in range(5):
        clock.t += 10.0
        bar.update(10)
    assert out.getvalue() == ""  # 50 s < interval: nothing yet
    bar.set_postfix(loss="0.5000")
    clock.t += 10.0
    bar.update(10)  # 60 s, 70 of 100
    bar.update(10)  # same instant: no second line
    bar.close()
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines == ["run: 70/100 batch (70 %), 01:00 elapsed, ~00:30 left, loss=0.5000",
                     "run: 80/100 batch (80 %), 01:00 elapsed, ~00:17 left, loss=0.5000"]
    assert "\r" not in out.getvalue()


def test_log_progress_write_goes_to_stdout(capsys):
    bar = LogProgress(3, file=io.StringIO())
    bar.write("trial done")
    assert capsys.readouterr().out == "trial done\n"


def test_progress_bar_picks_by_stream():
    assert isinstance(progress_bar(5, file=io.StringIO()), LogProgress)
    terminal = progress_bar(5, file=Terminal())
    assert isinstance(terminal, std_tqdm) and not terminal.disable
    terminal.close()
    off = progress_bar(5, file=io.StringIO(), enabled=False)
    assert isinstance(off, std_tqdm) and off.disable
