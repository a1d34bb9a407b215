import io
import os
import stat
import tarfile
import zipfile

import pytest

from pipeline.datasets.archives import ArchiveError, UnsafeArchive, safe_extract


def add_tar_member(archive, name, data=b"", kind=tarfile.REGTYPE, linkname=""):
    member = tarfile.TarInfo(name)
    member.type = kind
    member.linkname = linkname
    member.size = len(data) if kind == tarfile.REGTYPE else 0
    archive.addfile(member, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def make_tar(path, members, mode="w:gz"):
    """members: (name, data, kind, linkname) tuples, a harmless file first."""
    with tarfile.open(path, mode) as archive:
        add_tar_member(archive, "harmless.txt", b"ok")
        for name, data, kind, linkname in members:
            add_tar_member(archive, name, data, kind, linkname)
    return path


def make_zip(path, entries):
    """entries: (name, data, unix_mode or None), a harmless file first."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("harmless.txt", b"ok")
        for name, data, unix_mode in entries:
            info = zipfile.ZipInfo(name)
            if unix_mode is not None:
                info.create_system = 3
                info.external_attr = unix_mode << 16
            archive.writestr(info, data)
    return path


def files_under(folder):
    return sorted(os.path.relpath(os.path.join(root, name), folder)
                  for root, _, names in os.walk(folder) for name in names)


@pytest.fixture
def layout(tmp_path):
    """A target folder nested one level down, so anything escaping lands in `outside`."""
    outside = tmp_path / "outside"
    target = outside / "target"
    outside.mkdir()
    return outside, target


@pytest.mark.parametrize("mode,suffix", [("w", ".tar"), ("w:gz", ".tar.gz"),
                                         ("w:bz2", ".tar.bz2"), ("w:xz", ".tar.xz")])
def test_tar_compressions_extract(layout, mode, suffix):
    outside, target = layout
    archive = make_tar(outside / f"good{suffix}",
                       [("jpg/image_00001.jpg", b"one", tarfile.REGTYPE, ""),
                        ("jpg", b"", tarfile.DIRTYPE, "")], mode)
    assert safe_extract(archive, target) == ["harmless.txt", "jpg/image_00001.jpg"]
    assert (target / "jpg" / "image_00001.jpg").read_bytes() == b"one"


def test_zip_extracts_and_reports_paths(layout):
    outside, target = layout
    archive = make_zip(outside / "good.zip", [("img_align_celeba/000001.jpg", b"face", None),
                                              ("img_align_celeba/", b"", 0o40755)])
    assert safe_extract(archive, target) == ["harmless.txt", "img_align_celeba/000001.jpg"]
    assert (target / "img_align_celeba" / "000001.jpg").read_bytes() == b"face"


TAR_ATTACKS = {
    "absolute": ("/tmp/evil_absolute.txt", b"x", tarfile.REGTYPE, ""),
    "dotdot": ("../evil_dotdot.txt", b"x", tarfile.REGTYPE, ""),
    "nested_dotdot": ("jpg/../../evil_nested.txt", b"x", tarfile.REGTYPE, ""),
    "symlink_out": ("link", b"", tarfile.SYMTYPE, "../"),
    "symlink_in": ("link", b"", tarfile.SYMTYPE, "harmless.txt"),
    "hardlink": ("hard", b"", tarfile.LNKTYPE, "harmless.txt"),
    "chardev": ("null", b"", tarfile.CHRTYPE, ""),
    "blockdev": ("disk", b"", tarfile.BLKTYPE, ""),
    "fifo": ("pipe", b"", tarfile.FIFOTYPE, ""),
}


@pytest.mark.parametrize("attack", sorted(TAR_ATTACKS))
def test_tar_attacks_refused_before_writing(layout, attack):
    outside, target = layout
    name = TAR_ATTACKS[attack][0]
    archive = make_tar(outside / "evil.tar.gz", [TAR_ATTACKS[attack]])
    with pytest.raises(UnsafeArchive, match=name.replace(".", r"\.")) as refused:
        safe_extract(archive, target)
    assert refused.value.member_name == name
    assert files_under(outside) == ["evil.tar.gz"]
    assert not os.path.exists("/tmp/evil_absolute.txt")


def test_tar_symlink_then_file_through_it_refused(layout):
    outside, target = layout
    archive = make_tar(outside / "evil.tar", [("escape", b"", tarfile.SYMTYPE, ".."),
                                              ("escape/evil.txt", b"x", tarfile.REGTYPE, "")],
                       mode="w")
    with pytest.raises(UnsafeArchive, match="escape"):
        safe_extract(archive, target)
    assert files_under(outside) == ["evil.tar"]


def test_existing_symlink_in_target_is_not_followed(layout, tmp_path):
    outside, target = layout
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target.mkdir()
    (target / "jpg").symlink_to(elsewhere)
    archive = make_tar(outside / "flowers.tgz", [("jpg/image_00001.jpg", b"x", tarfile.REGTYPE, "")])
    with pytest.raises(UnsafeArchive, match="outside"):
        safe_extract(archive, target)
    assert list(elsewhere.iterdir()) == []


ZIP_ATTACKS = {
    "absolute": ("/tmp/evil_absolute.txt", None),
    "windows_absolute": ("C:/evil.txt", None),
    "backslash_absolute": ("\\evil.txt", None),
    "dotdot": ("../evil_dotdot.txt", None),
    "backslash_dotdot": ("..\\evil_backslash.txt", None),
    "symlink": ("link", stat.S_IFLNK | 0o777),
    "fifo": ("pipe", stat.S_IFIFO | 0o644),
    "chardev": ("null", stat.S_IFCHR | 0o644),
}


@pytest.mark.parametrize("attack", sorted(ZIP_ATTACKS))
def test_zip_attacks_refused_before_writing(layout, attack):
    outside, target = layout
    name, unix_mode = ZIP_ATTACKS[attack]
    archive = make_zip(outside / "evil.zip", [(name, b"../../etc", unix_mode)])
    with pytest.raises(UnsafeArchive) as refused:
        safe_extract(archive, target)
    assert refused.value.member_name == name
    assert repr(name) in str(refused.value)
    assert files_under(outside) == ["evil.zip"]


def test_zip_dotdot_that_stays_inside_is_allowed(layout):
    outside, target = layout
    archive = make_zip(outside / "ok.zip", [("a/../b.txt", b"b", None)])
    extracted = safe_extract(archive, target)
    for relative in extracted:
        assert (target / relative).is_file()


@pytest.mark.parametrize("content", [b"", b"definitely not an archive", b"PK\x03\x04 truncated"])
def test_non_archives_raise_archive_error(layout, content):
    outside, target = layout
    bogus = outside / "bogus.zip"
    bogus.write_bytes(content)
    with pytest.raises(ArchiveError, match="download it again"):
        safe_extract(bogus, target)


def test_truncated_tarball_raises_archive_error(layout):
    outside, target = layout
    archive = make_tar(outside / "full.tgz", [(f"jpg/{i}.bin", os.urandom(20000), tarfile.REGTYPE, "")
                                              for i in range(5)])
    truncated = outside / "truncated.tgz"
    truncated.write_bytes(archive.read_bytes()[:30000])
    with pytest.raises(ArchiveError):
        safe_extract(truncated, target)
