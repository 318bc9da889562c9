"""Sharded TFRecord output: names, order, shards visible only when complete, clean replacement."""

import hashlib
import os

import pytest

from library.data.tfrecord_writer import ShardedTFRecordWriter, records_digest, remove_set, shard_filename
from tests.helpers import tf


def records(path) -> list:
    """Every record of a TFRecord file (raises on a damaged one)."""
    return list(tf.compat.v1.io.tf_record_iterator(str(path)))


def test_records_land_in_their_shards_and_untouched_shards_exist_empty(tmp_path):
    with ShardedTFRecordWriter(str(tmp_path), "train", 4) as writer:
        writer.write(0, b"a")
        writer.write(0, b"b")
        writer.write(2, b"c")

    assert sorted(os.listdir(tmp_path)) == [shard_filename("train", i, 4) for i in range(4)]
    assert [records(tmp_path / shard_filename("train", i, 4)) for i in range(4)] == [[b"a", b"b"], [], [b"c"], []]
    assert writer.records == [2, 0, 1, 0]
    assert writer.sizes == [os.path.getsize(path) for path in writer.paths]
    assert shard_filename("train", 3, 4) == "train-00003-of-00004.tfrecord"


def test_each_shards_records_digest_is_known_without_reading_it_back(tmp_path):
    with ShardedTFRecordWriter(str(tmp_path), "train", 3) as writer:
        writer.write(0, b"a")
        writer.write(0, b"bc")
        writer.write(2, b"")
    length = lambda count: count.to_bytes(8, "little")  # noqa: E731
    assert writer.digests == [
        hashlib.sha256(length(1) + b"a" + length(2) + b"bc").hexdigest(),
        hashlib.sha256(b"").hexdigest(),
        hashlib.sha256(length(0)).hexdigest(),
    ]
    assert writer.digests == [records_digest(records(path)) for path in writer.paths]  # what a reader computes
    assert records_digest([b"ab", b"c"]) != records_digest([b"a", b"bc"])  # the framing tells records apart


def test_a_shard_gets_its_name_only_when_complete(tmp_path):
    with ShardedTFRecordWriter(str(tmp_path), "train", 2) as writer:
        writer.write(0, b"a")
        assert [name.startswith(".train-00000-of-00002.tfrecord.tmp-") for name in os.listdir(tmp_path)] == [True]
        writer.write(1, b"b")
        assert sorted(os.listdir(tmp_path))[-1] == "train-00000-of-00002.tfrecord"
        assert records(tmp_path / "train-00000-of-00002.tfrecord") == [b"a"]
        assert not (tmp_path / "train-00001-of-00002.tfrecord").exists()
    assert sorted(os.listdir(tmp_path)) == ["train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord"]


def test_a_failed_run_leaves_finished_shards_and_no_partial_one(tmp_path):
    with pytest.raises(RuntimeError):
        with ShardedTFRecordWriter(str(tmp_path), "train", 3) as writer:
            writer.write(0, b"a")
            writer.write(1, b"b")
            raise RuntimeError("the producer failed")
    assert os.listdir(tmp_path) == ["train-00000-of-00003.tfrecord"]


def test_a_new_set_replaces_an_earlier_one_only_once_complete(tmp_path):
    with ShardedTFRecordWriter(str(tmp_path), "train", 3) as writer:
        for shard in range(3):
            writer.write(shard, b"old")
    killed_run_leftover = tmp_path / ".train-00001-of-00005.tfrecord.tmp-0123abcd"
    killed_run_leftover.write_bytes(b"partial")
    unrelated = ["train-extra-00000-of-00001.tfrecord", "test-00000-of-00003.tfrecord", "labels.txt", ".other.tmp-1"]
    for name in unrelated:
        (tmp_path / name).write_bytes(b"keep")

    with ShardedTFRecordWriter(str(tmp_path), "train", 2) as writer:
        writer.write(0, b"new")
        writer.write(1, b"new")
        assert (tmp_path / "train-00002-of-00003.tfrecord").exists()  # the old set stays until the new one is done

    expected = ["train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord", *unrelated]
    assert sorted(os.listdir(tmp_path)) == sorted(expected)
    assert records(tmp_path / "train-00001-of-00002.tfrecord") == [b"new"]


def test_shards_are_filled_in_order(tmp_path):
    with pytest.raises(ValueError, match="shards are filled in order"):
        with ShardedTFRecordWriter(str(tmp_path), "train", 2) as writer:
            writer.write(1, b"b")
            writer.write(0, b"a")


def test_an_unwritable_folder_fails_on_entering(tmp_path):
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(tf.errors.OpError):
        with ShardedTFRecordWriter(str(tmp_path / "file" / "shards"), "train", 2):
            pass


def test_remove_set_removes_one_sets_shards_and_temporaries_only(tmp_path):
    names = ["test-00000-of-00002.tfrecord", "test-00001-of-00002.tfrecord", ".test-00000-of-00001.tfrecord.tmp-0123abcd",
             "train-00000-of-00001.tfrecord", "test-manifest.json", "test-extra-00000-of-00001.tfrecord"]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    remove_set(str(tmp_path), "test", keep={"test-00001-of-00002.tfrecord"})
    assert sorted(os.listdir(tmp_path)) == sorted(names[1:2] + names[3:])
