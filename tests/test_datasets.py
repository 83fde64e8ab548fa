import pytest
import torch

from toolkit.audio import save_audio
from toolkit.errors import DataError
from toolkit.scoring.datasets import (
    load_dataset,
    parse_dataset_spec,
    read_bvcc,
    read_csv_dataset,
    read_vmc2023,
    read_yourtts,
    vmc2023_system,
)


def _wav(path, n=4000):
    path.parent.mkdir(parents=True, exist_ok=True)
    save_audio(path, 0.1 * torch.randn(n), 16000)


def test_bvcc_layout(tmp_path):
    data = tmp_path / "phase1-main" / "DATA"
    for name in ("sys1-utta", "sys1-uttb", "sys2-uttc", "sys2-uttd"):
        _wav(data / "wav" / f"{name}.wav")
    (data / "sets").mkdir()
    (data / "sets" / "val_mos_list.txt").write_text("sys1-utta.wav,3.5\nsys1-uttb.wav,4\nsys2-uttc.wav,2.25\n")
    (data / "sets" / "test_mos_list.txt").write_text("sys2-uttd.wav,1.5\nsys1-utta.wav,3\n")
    dev = read_bvcc(tmp_path / "phase1-main", "dev")
    assert [(i.utt_id, i.system, i.mos) for i in dev.items] == [
        ("sys1-utta", "sys1", 3.5), ("sys1-uttb", "sys1", 4.0), ("sys2-uttc", "sys2", 2.25)]
    assert dev.items[0].path == data / "wav" / "sys1-utta.wav"
    assert any("single utterance" in n and "sys2" in n for n in dev.notes)
    assert len(read_bvcc(data, "test")) == 2  # the DATA folder itself works too
    with pytest.raises(DataError, match="no list for split 'train'"):
        read_bvcc(data, "train")
    with pytest.raises(DataError, match="not a VoiceMOS 2022 layout"):
        read_bvcc(tmp_path, "test")
    ood = load_dataset(f"vmc2022-ood:{tmp_path / 'phase1-main'}:test")
    assert ood.kind == "vmc2022-ood" and ood.name == "vmc2022-ood-test"


def test_bvcc_samples_from_shared_data(shared_data):
    ds = load_dataset(f"answers:{shared_data / 'mos' / 'bvcc-samples' / 'label.txt'}")
    assert ds.name == "bvcc-samples" and len(ds) == 4
    assert sorted(ds.system_counts().items()) == [("sys2e1cb", 1), ("sys64e2f", 2), ("sys7ab3c", 1)]
    assert {i.mos for i in ds.items} == {3.375, 3.625, 4.0}
    assert all(i.path.is_file() for i in ds.items)


def test_yourtts_reader(shared_data):
    pt = read_yourtts(shared_data / "mos" / "yourtts", "PT")
    assert len(pt) == 530 and len(pt.system_counts()) == 11
    assert 1.6 < min(i.mos for i in pt.items) and max(i.mos for i in pt.items) <= 5.0
    en = load_dataset(f"yourtts:{shared_data / 'mos' / 'yourtts'}:en")
    assert len(en) == 1119 and len(en.system_counts()) == 14 and en.name == "yourtts-en"
    with pytest.raises(DataError, match="PT or EN"):
        read_yourtts(shared_data / "mos" / "yourtts", "FR")


def test_vmc2023_systems_and_subtracks(tmp_path):
    assert vmc2023_system("VoiceMOS2023Track1-A-AD_test_0026", "1") == "A-AD"
    assert vmc2023_system("VoiceMOS2023Track2-B01-SF1-CDF1-30001", "2") == "B01"
    assert vmc2023_system("VoiceMOS2023Track3-Noisy_snr5_white_TMHINT_g4_32_03", "3") == "Noisy_snr5_white_TMHINT"
    assert vmc2023_system("VoiceMOS2023Track3-clean_TMHINT_b1_01_03", "3") == "clean_TMHINT"
    ids = ["VoiceMOS2023Track1-A-AD_test_0001", "VoiceMOS2023Track1-A-NEB_test_0002", "VoiceMOS2023Track1-B-NEB_test_0003"]
    for i in ids:
        _wav(tmp_path / f"{i}.wav")
    (tmp_path / "track1_answer.txt").write_text("".join(f"{i},{3 + k / 10}\n" for k, i in enumerate(ids)))
    assert len(read_vmc2023(tmp_path, "1")) == 3
    a = read_vmc2023(tmp_path, "1a")
    assert [i.system for i in a.items] == ["A-NEB", "B-NEB"]
    assert [i.system for i in load_dataset(f"vmc2023:{tmp_path}:1b").items] == ["A-AD"]
    with pytest.raises(DataError, match="no answer file"):
        read_vmc2023(tmp_path, "2")
    with pytest.raises(DataError, match="needs a track"):
        parse_dataset_spec(f"vmc2023:{tmp_path}")


def test_csv_reader_and_every_bad_input(tmp_path):
    for n in ("a", "b", "c"):
        _wav(tmp_path / "clips" / f"{n}.wav")
    (tmp_path / "clips" / "empty.wav").write_bytes(b"")
    good = tmp_path / "good.csv"
    good.write_text("path,mos,system\nclips/a.wav,3.5,s1\nclips/b.wav,4,s1\nclips/c.wav,2,s2\n")
    ds = read_csv_dataset(good)
    assert [i.utt_id for i in ds.items] == ["clips/a", "clips/b", "clips/c"] and ds.items[2].system == "s2"
    assert ds.items[0].path == tmp_path / "clips" / "a.wav"

    def bad(text, match, name="bad.csv"):
        p = tmp_path / name
        p.write_text(text)
        with pytest.raises(DataError, match=match):
            read_csv_dataset(p)
        return p

    bad("file,score\nclips/a.wav,3\n", r"bad.csv: missing column\(s\) path, mos")
    p = bad("path,mos\nclips/a.wav,3\nclips/b.wav,good\n", r"bad.csv:3: MOS 'good' is not a number")
    skipped = read_csv_dataset(p, skip_bad=True)
    assert len(skipped) == 1 and skipped.skipped[0][0].endswith("bad.csv:3")
    bad("path,mos\nclips/a.wav,3\nclips/a.wav,4\n", "duplicate utterance ID 'clips/a'")
    bad("path,mos\nclips/a.wav,3\nclips/zzz.wav,4\n", "audio file not found: .*zzz.wav")
    bad("path,mos\nclips/empty.wav,3\n", "zero-length audio file")
    bad("path,mos\nclips/a.wav,nan\n", "not finite")
    with pytest.raises(DataError, match="no usable rated clips"):
        read_csv_dataset(_all_bad(tmp_path), skip_bad=True)
    with pytest.raises(DataError, match="file not found"):
        read_csv_dataset(tmp_path / "nothing.csv")


def _all_bad(tmp_path):
    p = tmp_path / "allbad.csv"
    p.write_text("path,mos\nclips/a.wav,x\n")
    return p


def test_dataset_specs():
    s = parse_dataset_spec("yourtts-pt=yourtts:/data/yourtts:PT")
    assert (s.name, s.kind, s.path, s.args) == ("yourtts-pt", "yourtts", "/data/yourtts", ("PT",))
    assert parse_dataset_spec("yourtts:/d:EN").name == "yourtts-en"
    assert parse_dataset_spec("bvcc:/d").name == "bvcc-test"
    assert parse_dataset_spec("csv:/d/mine.csv").name == "mine"
    s = parse_dataset_spec("vmc2023:/d/track3:3:/d/answers/track3_answer.txt")
    assert s.args == ("3", "/d/answers/track3_answer.txt") and s.name == "vmc2023-3"
    for text in ("nonsense:/x", "yourtts", "bvcc:"):
        with pytest.raises(DataError, match="bad dataset spec"):
            parse_dataset_spec(text)


def test_csv_reference_column_and_degradation_manifest(tmp_path):
    for name in ("clean/a.wav", "deg/a-noise-1.wav", "clean/b.wav", "deg/b-noise-1.wav"):
        _wav(tmp_path / name)
    table = tmp_path / "refs.csv"
    table.write_text("path,mos,reference\nclean/a.wav,5,clean/a.wav\ndeg/a-noise-1.wav,3,clean/a.wav\n"
                     "deg/b-noise-1.wav,3,\n")
    ds = read_csv_dataset(table)
    assert [i.reference for i in ds.items] == [tmp_path / "clean/a.wav", tmp_path / "clean/a.wav", None]
    assert "2 with a clean reference" in ds.describe()
    table.write_text("path,mos,reference\ndeg/a-noise-1.wav,3,clean/missing.wav\n")
    with pytest.raises(DataError, match=r"refs.csv:2: clean reference file not found: .*missing.wav"):
        read_csv_dataset(table)
    # toolkit degrade's manifest: the clean row of each clean_id is the reference of its versions
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        "path,clean_id,type,param,level,severity,mos,system,source\n"
        "clean/a.wav,a,clean,,,0,5,clean,/src/a.wav\n"
        "deg/a-noise-1.wav,a,noise,snr_db,30,1,3,noise-1,/src/a.wav\n"
        "clean/b.wav,b,clean,,,0,5,clean,/src/b.wav\n"
        "deg/b-noise-1.wav,b,noise,snr_db,30,1,3,noise-1,/src/b.wav\n"
    )
    suite = read_csv_dataset(manifest)
    assert {i.utt_id: i.reference.name for i in suite.items} == {
        "clean/a": "a.wav", "deg/a-noise-1": "a.wav", "clean/b": "b.wav", "deg/b-noise-1": "b.wav"}
    assert all(i.reference.parent == tmp_path / "clean" for i in suite.items)
