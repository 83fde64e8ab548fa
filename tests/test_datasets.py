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
)


def _wav(path, n=4000):
    path.parent.mkdir(parents=True, exist_ok=True)
    save_audio(path, 0.1 * torch.randn(n), 16000)


# Fixture names follow the published layouts as lhotse (recipes/bvcc.py) and SHEET
# (egs/{bvcc,bc19,bc23,vmc23}/local/data_prep.py) read them: folders, list files, line formats and
# ID forms. The BVCC IDs are real ones (../shared/data/mos/bvcc-samples, SHEET's example line); the
# audio is synthetic.
BVCC_IDS = ["sys64e2f-utt9c183cd", "sys64e2f-utt491a78a", "sys64e2f-utt8485f83", "sys2e1cb-uttbab062c",
            "sys7ab3c-utt1417b69"]


def _bvcc_main(root):
    data = root / "main" / "DATA"
    for utt in BVCC_IDS:
        _wav(data / "wav" / f"{utt}.wav")
    sets = data / "sets"
    sets.mkdir()
    # mean lists for train and val, as released
    (sets / "train_mos_list.txt").write_text("sys64e2f-utt9c183cd.wav,3.625\nsys2e1cb-uttbab062c.wav,3.375\n")
    (sets / "val_mos_list.txt").write_text("sys64e2f-utt491a78a.wav,4.0\nsys7ab3c-utt1417b69.wav,3.375\n")
    # per-rating files: sysID,uttID,rating,ignore,{}_AGERANGE_LISTENERID_GENDER_x_x_HEARINGIMPAIRMENT
    listener = "{}_30-39_bZPQE7w4Zl3g_Female_Valid_1_No"
    (sets / "DEVSET").write_text(f"sys64e2f,sys64e2f-utt491a78a.wav,4,VDP1ovyrBzg8_1,{listener}\n")
    (sets / "TESTSET").write_text(
        f"sys64e2f,sys64e2f-utt8485f83.wav,4,VDP1ovyrBzg8_1,{listener}\n"
        f"sys64e2f,sys64e2f-utt8485f83.wav,3,VDP1ovyrBzg8_2,{listener.replace('bZPQ', 'cXYZ')}\n"
        f"sys2e1cb,sys2e1cb-uttbab062c.wav,2,VDP1ovyrBzg8_1,{listener}\n"
        f"sys7ab3c,sys7ab3c-utt1417b69.wav,5,VDP1ovyrBzg8_1,{listener}\n"
        f"sys64e2f,sys64e2f-utt9c183cd.wav,1,VDP1ovyrBzg8_1,{listener}\n"
    )
    return data


def test_bvcc_main_track_layout(tmp_path):
    data = _bvcc_main(tmp_path)
    dev = read_bvcc(tmp_path / "main", "dev")  # val_mos_list.txt wins over DEVSET
    assert [(i.utt_id, i.system, i.mos) for i in dev.items] == [
        ("sys64e2f-utt491a78a", "sys64e2f", 4.0), ("sys7ab3c-utt1417b69", "sys7ab3c", 3.375)]
    assert dev.items[0].path == data / "wav" / "sys64e2f-utt491a78a.wav"
    # no test_mos_list.txt: the per-rating TESTSET is averaged per clip, the system is its first column
    test = read_bvcc(data, "test")
    assert {i.utt_id: (i.system, i.mos) for i in test.items} == {
        "sys64e2f-utt8485f83": ("sys64e2f", 3.5), "sys2e1cb-uttbab062c": ("sys2e1cb", 2.0),
        "sys7ab3c-utt1417b69": ("sys7ab3c", 5.0), "sys64e2f-utt9c183cd": ("sys64e2f", 1.0)}
    assert any("single utterance" in n and "sys2e1cb" in n for n in test.notes)
    (data / "sets" / "TRAINSET").write_text("sys64e2f,sys64e2f-utt9c183cd.wav,four,x,y\n")
    assert len(read_bvcc(data, "train")) == 2  # the mean list is read, the broken TRAINSET is not
    (data / "sets" / "train_mos_list.txt").unlink()
    with pytest.raises(DataError, match=r"TRAINSET:1: MOS 'four' is not a number"):
        read_bvcc(data, "train")
    (data / "sets" / "TRAINSET").unlink()
    with pytest.raises(DataError, match="no list for split 'train'.*train_mos_list.txt and TRAINSET"):
        read_bvcc(data, "train")
    with pytest.raises(DataError, match="not a VoiceMOS 2022 layout"):
        read_bvcc(tmp_path, "test")


def test_vmc2022_ood_track_layout(tmp_path):
    # phase1-ood: same DATA/{wav,sets}; per-rating lines name the clip WITHOUT .wav, and the listener
    # info is {}_na_LISTENERID_na_na_na_LISTENERTYPE; unlabeled_mos_list.txt lists names only.
    data = tmp_path / "phase1-ood" / "DATA"
    ids = ["sys4bafa-uttc2e86f6", "sys4bafa-utt1bb0a5e", "sysd3e2a-utt7f2b1c0"]  # made-up, same form
    for utt in ids + ["sys0000a-utt0000001"]:
        _wav(data / "wav" / f"{utt}.wav")
    sets = data / "sets"
    sets.mkdir()
    (sets / "unlabeled_mos_list.txt").write_text("sys0000a-utt0000001.wav\n")
    (sets / "DEVSET").write_text("".join(
        f"{u.split('-')[0]},{u},{r},x,{{}}_na_L{k}_na_na_na_EE\n" for k, (u, r) in enumerate(zip(ids, [2, 4, 3]))))
    ood = load_dataset(f"vmc2022-ood:{tmp_path / 'phase1-ood'}:dev")
    assert ood.kind == "vmc2022-ood" and ood.name == "vmc2022-ood-dev"
    assert [(i.utt_id, i.system, i.mos, i.path.name) for i in ood.items] == [
        ("sys4bafa-uttc2e86f6", "sys4bafa", 2.0, "sys4bafa-uttc2e86f6.wav"),
        ("sys4bafa-utt1bb0a5e", "sys4bafa", 4.0, "sys4bafa-utt1bb0a5e.wav"),
        ("sysd3e2a-utt7f2b1c0", "sysd3e2a", 3.0, "sysd3e2a-utt7f2b1c0.wav")]
    with pytest.raises(DataError, match="unknown split 'unlabeled'"):
        load_dataset(f"vmc2022-ood:{tmp_path / 'phase1-ood'}:unlabeled")


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


def test_vmc2023_layout_systems_and_subtracks(tmp_path):
    # SHEET's layout: one folder of <sample_id>.wav per track and answers/track<N>_answer.txt beside them.
    root = tmp_path / "vmc23"
    track1 = ["VoiceMOS2023Track1-A-AD_test_0026", "VoiceMOS2023Track1-BF-AD_test_0026",
              "VoiceMOS2023Track1-A-NEB_test_0805", "VoiceMOS2023Track1-BT-NEB_test_0805"]
    track2 = ["VoiceMOS2023Track2-B01-SF1-CDF1-30001", "VoiceMOS2023Track2-B01-SF1-CDF1-30002",
              "VoiceMOS2023Track2-B02-SM1-CDM1-30001"]
    track3 = ["VoiceMOS2023Track3-Noisy_snr5_white_TMHINT_g4_32_03", "VoiceMOS2023Track3-clean_TMHINT_b1_01_03",
              "VoiceMOS2023Track3-TMHINT_b1_01_03"]
    for track, ids in (("track1", track1), ("track2", track2), ("track3", track3)):
        for i in ids:
            _wav(root / track / f"{i}.wav")
        (root / "answers").mkdir(exist_ok=True)
        (root / "answers" / f"{track}_answer.txt").write_text("".join(f"{i},{3 + k / 10}\n" for k, i in enumerate(ids)))
    one = read_vmc2023(root / "track1", "1")  # answers found in ../answers/
    assert [i.system for i in one.items] == ["A-AD", "BF-AD", "A-NEB", "BT-NEB"]
    assert [i.system for i in read_vmc2023(root / "track1", "1a").items] == ["A-NEB", "BT-NEB"]
    assert [i.system for i in load_dataset(f"vmc2023:{root / 'track1'}:1b").items] == ["A-AD", "BF-AD"]
    two = load_dataset(f"vmc2023:{root / 'track2'}:track2")
    assert [i.system for i in two.items] == ["B01", "B01", "B02"] and two.name == "vmc2023-track2"
    three = read_vmc2023(root / "track3", "3")
    assert [i.system for i in three.items] == ["Noisy_snr5_white_TMHINT", "clean_TMHINT"]
    assert any("1 bare TMHINT_* clip(s) left out" in n for n in three.notes)
    assert three.items[1].path == root / "track3" / "VoiceMOS2023Track3-clean_TMHINT_b1_01_03.wav"
    # an answer file given explicitly, audio elsewhere
    assert len(read_vmc2023(root / "track2", "2", root / "answers" / "track2_answer.txt")) == 3
    (root / "answers" / "track2_answer.txt").unlink()
    with pytest.raises(DataError, match="no answer file"):
        read_vmc2023(root / "track2", "2")
    with pytest.raises(DataError, match="needs a track"):
        parse_dataset_spec(f"vmc2023:{root}")


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
