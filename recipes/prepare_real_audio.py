"""The real target-domain audio the recipes were run on, split by speaker, and held-out degradation sets.

Sources (see ../shared/notes/real-speech-sources.md for what each holds and its licence): git mirrors of
public repositories and Debian packages. Nothing here downloads by itself: pass the mirrors you have
(bare git directories) and the folder where `apt-get download` + `dpkg -x` unpacked the Debian packages.

    python recipes/prepare_real_audio.py --mirrors /work/.mirror --debian DEB_ROOT --output /work/runs

Writes OUTPUT/data/<domain>/<speaker or source>/*.wav (16 kHz mono, 16-bit; MIR-1K: its right channel,
the voice), then OUTPUT/evalsets/<domain>-clean/ (10 clips of the held-out speakers, seeded choice) and
OUTPUT/evalsets/<domain>-degraded/ (`toolkit degrade`, all types, 4 levels, seed 0). The held-out
speakers (HELD_OUT) are never given to pretraining; the recipe's --exclude proves it by content hash.
Needs ffmpeg (French G.722 and GSM prompts). Keep OUTPUT outside the repository: never commit audio.
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
from pathlib import Path

import soundfile as sf

MIRRORS = {  # repository -> folders taken from it
    "QianZ423+kaldi-asr-aishell-sample": ["AISHELL_Sample_data"],
    "jackaduma+CycleGAN-VC2": ["data/S0913"],  # not converted_sound/ (synthetic)
    "andabi+music-source-separation": ["dataset/mir-1k/Wavfile"],
    "OHF-Voice+speech-to-phrase": ["tests/wav/fr"],  # generated/ is synthetic: dropped below
}
FRENCH_DEBIAN = {  # source folder -> (path under the unpacked packages, file pattern, ffmpeg input options)
    "asterisk-june": ("usr/share/asterisk/sounds/fr_CA_f_June", "*.g722", ["-f", "g722"]),
    "asterisk-armelle": ("usr/share/asterisk/sounds/fr", "*.gsm", ["-f", "gsm"]),
    "tuxpaint": ("usr/share/tuxpaint/stamps", "*_desc_fr.ogg", []),
    "ktuberling": ("usr/share/ktuberling/sounds/fr", "*.wav", []),
}
HELD_OUT = {
    "zh": ["S0913"],
    "singing": ["abjones", "annar", "bobon"],
    "fr": ["ohf-speech-to-phrase"],
}
EVAL_CLIPS = 10


def to_wav(source: Path, target: Path, input_options: list[str] = ()) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *input_options, "-i", str(source),
                    "-ac", "1", "-ar", "16000", "-c:a", "pcm_s16le", str(target)], check=True)


def flat_name(path: Path, root: Path) -> str:
    return "_".join(path.relative_to(root).with_suffix(".wav").parts).replace(" ", "_")


def prepare(mirrors: Path, debian: Path, shared: Path, out: Path) -> None:
    raw = out / "raw"
    for repo, folders in MIRRORS.items():
        archive = subprocess.run(["git", "-C", str(mirrors / repo / "repo"), "archive", "HEAD", "--", *folders],
                                 check=True, capture_output=True).stdout
        raw.mkdir(parents=True, exist_ok=True)
        subprocess.run(["tar", "-x", "-C", str(raw)], input=archive, check=True)
    shutil.rmtree(raw / "tests/wav/fr/generated", ignore_errors=True)
    data = out / "data"
    for f in sorted((raw / "AISHELL_Sample_data").glob("*.wav")) + sorted((raw / "data/S0913").glob("*.wav")):
        speaker = f.name[6:11]  # BAC009S0150W0337 -> S0150
        (data / "zh" / speaker).mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, data / "zh" / speaker / f.name)
    for f in sorted((raw / "dataset/mir-1k/Wavfile").glob("*.wav")):
        audio, rate = sf.read(f, always_2d=True)
        singer = f.name.split("_")[0]
        (data / "singing" / singer).mkdir(parents=True, exist_ok=True)
        sf.write(data / "singing" / singer / f.name, audio[:, 1], rate, subtype="PCM_16")  # right = voice
    for name, (folder, pattern, options) in FRENCH_DEBIAN.items():
        root = debian / folder
        for f in sorted(root.rglob(pattern)):
            to_wav(f, data / "fr" / name / flat_name(f, root), options)
    for f in sorted((raw / "tests/wav/fr").glob("*.wav")):
        to_wav(f, data / "fr" / "ohf-speech-to-phrase" / flat_name(f, raw / "tests/wav/fr"))
    for f in sorted((shared / "data/speech/fr").rglob("*.*")):
        to_wav(f, data / "fr" / "shared-klettres" / flat_name(f, shared / "data/speech/fr"))


def evaluation_sets(out: Path, toolkit: str = "toolkit") -> None:
    for domain, speakers in HELD_OUT.items():
        files = sorted(f for s in speakers for f in (out / "data" / domain / s).glob("*.wav"))
        clean = out / "evalsets" / f"{domain}-clean"
        clean.mkdir(parents=True, exist_ok=True)
        for f in random.Random(0).sample(files, EVAL_CLIPS):
            shutil.copy2(f, clean / f"{f.parent.name}__{f.name}")
        subprocess.run([toolkit, "degrade", str(clean), "--output", str(out / "evalsets" / f"{domain}-degraded"),
                        "--levels", "4", "--seed", "0", "--no-progress"], check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n")[2])
    parser.add_argument("--mirrors", type=Path, required=True, help="folder of bare git mirrors (owner+name/repo)")
    parser.add_argument("--debian", type=Path, required=True, help="root where the Debian packages were unpacked")
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    parser.add_argument("--output", type=Path, required=True, help="run-data folder, outside the repository")
    args = parser.parse_args(argv)
    prepare(args.mirrors, args.debian, args.shared, args.output)
    evaluation_sets(args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
