"""Every CLI prints config and input errors as one line naming the key or path (exit status 2), never a traceback."""

from __future__ import annotations

import pytest


def _training(argv):
    from training.run import main

    return main(argv)


def _preprocess(argv):
    from infra.preprocess import main

    return main(argv)


def _generate(argv):
    from model.generate import main

    return main(argv)


def _evaluation(argv):
    from evaluation.run import main

    return main(argv)


def _verify(argv):
    from model.checkpoints import main

    return main(["verify", *argv])


CASES = {
    "training-config": (_training, ["--config", "tiny/stage1", "train.lr=-1"], "training", "train.lr"),
    "training-key": (_training, ["--config", "tiny/stage1", "train.lrr=1"], "training", "did you mean train.lr?"),
    "training-preset": (_training, ["--config", "tiny/stage9"], "training", "tiny/stage9"),
    "preprocess-config": (_preprocess, ["--input", "{tmp}", "--output", "{tmp}/out", "crop_size=7"], "preprocess",
                          "preprocess.crop_size"),
    "preprocess-input": (_preprocess, ["--input", "{tmp}/nothing", "--output", "{tmp}/out"], "preprocess",
                         "{tmp}/nothing"),
    "generate-config": (_generate, ["--reference", "r.png", "--audio", "a.wav", "--output", "o.mp4",
                                    "inference.no_such_key=1"], "generate", "no_such_key"),
    "generate-input": (_generate, ["--reference", "{tmp}/r.png", "--audio", "a.wav", "--output", "o.mp4"],
                       "generate", "{tmp}/r.png"),
    "evaluation-config": (_evaluation, ["--config", "nope/stage3"], "evaluation", "nope/stage3"),
    "verify-input": (_verify, ["--folder", "{tmp}/ckpt"], "checkpoints verify", "{tmp}/ckpt"),
    "verify-config": (_verify, ["--folder", "{tmp}", "--preset", "nope"], "checkpoints verify", "nope"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_cli_reports_config_and_input_errors_on_one_line(case, tmp_path, capsys):
    main, argv, prog, named = CASES[case]
    rc = main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) >= 1 and err[-1].startswith(f"{prog}: error: ") and named.replace("{tmp}", str(tmp_path)) in err[-1]
    assert not any("Traceback" in line for line in err)
