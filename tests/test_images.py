"""Images: polarisation, MAF filter, sorting, resize/crop, determinism; ms and VCF readers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import image_config
from scipy.ndimage import gaussian_filter, map_coordinates

from hpc_popgen.errors import InputDataError, ManifestError
from hpc_popgen.images import ImageConfig, image_and_sites, make_image
from hpc_popgen.images.process import resize_binary, sort_columns, sort_rows, sort_rows_distance
from hpc_popgen.readers import read_ms, read_vcf

DATA = Path(__file__).parent / "data"


def random_haps(n=32, s=60, seed=1, p=0.3):
    return (np.random.default_rng(seed).random((n, s)) < p).astype(np.uint8)


def test_image_config_roundtrip_and_errors():
    cfg = image_config(polarisation="derived", maf=0.05, sort="both", size=(64, 32), resize="crop_pad")
    assert ImageConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.to_dict()["size"] == [64, 32]
    with pytest.raises(ManifestError, match=r"^sort: 'diagonal' is not one of"):  # key relative to the config
        image_config(maf=0.0, sort="diagonal")
    with pytest.raises(ManifestError, match="unknown key"):
        ImageConfig.from_dict({"colour": 1})


def test_major_minor_flips_majority_sites_and_maf_filters():
    m = np.array([[1, 1, 0, 1], [1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0]], dtype=np.uint8)
    pos = np.arange(4.0)
    cfg = image_config(polarisation="major_minor", maf=0.0, sort="none", size=(4, 3), resize="crop_pad")
    img, n_sites = image_and_sites(m, pos, cfg, centre=1.5)
    # site 0 (3/4 derived) flipped to minor; sites 1 (3/4) flipped; site 2 kept; site 3 kept; none dropped
    assert n_sites == 4
    full = np.array([[0, 0, 0, 1], [0, 1, 0, 0], [0, 0, 0, 0], [1, 0, 1, 0]], dtype=np.uint8)
    assert np.array_equal(img, full[:, 0:3]) or np.array_equal(img, full[:, 1:4])
    _, n_kept = image_and_sites(m, pos, image_config(maf=0.3, sort="none", size=(4, 4), resize="crop_pad"))
    assert n_kept == 0  # every site has minor frequency 1/4 < 0.3
    derived, _ = image_and_sites(m, pos, image_config(maf=0.0, polarisation="derived", sort="none", size=(4, 4),
                                                     resize="crop_pad"))
    assert np.array_equal(derived, m)


def test_sort_rows_groups_identical_haplotypes_most_frequent_first():
    a, b, c = [1, 0, 0], [0, 1, 1], [1, 1, 1]
    m = np.array([a, b, c, b, a, b], dtype=np.uint8)
    out = sort_rows(m)
    assert out.tolist() == [b, b, b, a, a, c]
    dist = sort_rows_distance(np.array([c, a, b, b, b], dtype=np.uint8))
    assert dist.tolist()[:3] == [b, b, b] and dist.tolist()[3] == c  # c is 1 away from b, a is 3 away


def test_sort_columns_by_frequency_descending():
    m = np.array([[0, 1, 1], [0, 1, 0], [1, 1, 0]], dtype=np.uint8)
    assert sort_columns(m).sum(axis=0).tolist() == [3, 1, 1]


def test_resize_matches_gaussian_then_linear_interpolation():
    m = random_haps(48, 250, seed=3)
    out = resize_binary(m, (32, 128))
    # independent reference: scipy's 2-D Gaussian (mirror) then order-1 map_coordinates (mirror)
    fr, fc = 48 / 32, 250 / 128
    blurred = gaussian_filter(m.astype(float), ((fr - 1) / 2, (fc - 1) / 2), mode="mirror")
    rr, cc = np.meshgrid((np.arange(32) + 0.5) * fr - 0.5, (np.arange(128) + 0.5) * fc - 0.5, indexing="ij")
    ref = map_coordinates(blurred, [rr, cc], order=1, mode="mirror")
    close = np.abs(ref - 0.5) > 1e-4
    assert np.array_equal(out[close], (ref >= 0.5).astype(np.uint8)[close])
    assert out.shape == (32, 128) and set(np.unique(out)) <= {0, 1}


def test_resize_identity_and_constants():
    m = random_haps(16, 16)
    assert np.array_equal(resize_binary(m, (16, 16)), m)
    assert resize_binary(np.ones((10, 300), np.uint8), (8, 64)).all()
    assert not resize_binary(np.zeros((10, 300), np.uint8), (8, 64)).any()
    assert resize_binary(np.zeros((10, 0), np.uint8), (8, 8)).shape == (8, 8)


def test_crop_pad_takes_sites_around_the_centre():
    m = np.zeros((4, 10), np.uint8)
    m[0, :] = 1
    m[1, 4:6] = 1  # marks the two central sites
    pos = np.arange(10.0) * 10
    img = make_image(m, pos, image_config(maf=0.0, polarisation="derived", sort="none", size=(6, 2), resize="crop_pad"),
                     centre=45.0)
    assert img[1].tolist() == [1, 1] and img[4:].sum() == 0  # rows padded at the bottom
    wide = make_image(m, pos, image_config(maf=0.0, polarisation="derived", sort="none", size=(4, 14), resize="crop_pad"))
    assert wide[0].tolist() == [0, 0] + [1] * 10 + [0, 0]


def test_same_input_same_image_bits():
    m = random_haps(128, 250, seed=7)
    pos = np.sort(np.random.default_rng(7).random(250))
    cfg = image_config(maf=0.0, sort="both")
    a = make_image(m, pos, cfg)
    b = make_image(m.copy(), pos.copy(), cfg)
    assert a.dtype == np.uint8 and a.shape == (128, 128) and np.array_equal(a, b)


def test_read_ms_plain_and_gzip():
    for name in ("two_reps.ms", "two_reps.ms.gz"):
        reps = read_ms(DATA / name)
        assert len(reps) == 2
        assert reps[0].matrix.tolist() == [[0, 1, 0], [1, 1, 0], [0, 0, 0], [0, 1, 1]]
        assert reps[0].positions.tolist() == [0.1, 0.5, 0.9]
        assert reps[1].matrix.shape == (4, 0)


def test_read_ms_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.ms"
    bad.write_text("ms 2 1 -t 1\n1 2 3\n\n//\nsegsites: 2\npositions: 0.1 0.2\n01\n0x\n")
    with pytest.raises(InputDataError, match=r"bad.ms:8: haplotype characters"):
        read_ms(bad)
    with pytest.raises(InputDataError, match="no replicates"):
        (tmp_path / "empty.ms").write_text("nothing\n")
        read_ms(tmp_path / "empty.ms")


@pytest.fixture
def vcf_cache(tmp_path, monkeypatch):
    """Plain-text VCFs get their bgzipped, indexed copy in this test's folder, not in ~/.cache."""
    monkeypatch.setenv("HPCPOP_CACHE_DIR", str(tmp_path / "cache"))


def test_read_vcf_hand_made_two_rows_per_sample_in_order(vcf_cache):
    hv = read_vcf(DATA / "phased.vcf", region="chr1:1-1000", samples=["C", "A"])
    # records at 100, 200, 300 (150 is multi-allelic: skipped; chr2 outside the region)
    assert hv.positions.tolist() == [99.0, 199.0, 299.0]
    assert hv.names == ["C_0", "C_1", "A_0", "A_1"]
    assert hv.matrix.tolist() == [[0, 0, 1], [0, 1, 1], [0, 1, 0], [1, 0, 0]]
    gz = read_vcf(DATA / "phased.vcf.gz")
    assert gz.matrix.shape == (6, 4)  # all samples, all biallelic records incl. chr2


def test_read_vcf_sample_list_file(tmp_path, vcf_cache):
    f = tmp_path / "samples.txt"
    f.write_text("# my samples\nB\n")
    hv = read_vcf(DATA / "phased.vcf", region="chr1:100-200", samples=f)
    assert hv.matrix.tolist() == [[1, 0], [1, 0]]


def test_read_vcf_unphased_missing_and_unknown_sample_fail_clearly():
    with pytest.raises(InputDataError, match=r"unphased.vcf: record chr1:200: unphased genotype '1/0' for sample A"):
        read_vcf(DATA / "unphased.vcf")
    with pytest.raises(InputDataError, match=r"missing.vcf: record chr1:300: missing genotype '\.\|1' for sample B"):
        read_vcf(DATA / "missing.vcf")
    with pytest.raises(InputDataError, match="not in the VCF: Z"):
        read_vcf(DATA / "phased.vcf", samples=["A", "Z"])
    with pytest.raises(InputDataError, match="file not found"):
        read_vcf(DATA / "nope.vcf")


def test_images_from_user_data_ms_and_vcf(vcf_cache):
    from hpc_popgen.images import images_from

    cfg = image_config(maf=0.0, polarisation="derived", sort="rows", size=(4, 3), resize="crop_pad")
    imgs, sites = images_from(read_ms(DATA / "two_reps.ms"), cfg)
    assert imgs.shape == (2, 4, 3) and sites.tolist() == [3, 0]
    # rows sorted: [0,1,0], [1,1,0], [0,0,0], [0,1,1] are all distinct -> lexicographic order
    assert imgs[0].tolist() == [[0, 0, 0], [0, 1, 0], [0, 1, 1], [1, 1, 0]] and not imgs[1].any()
    vcf_imgs, _ = images_from([read_vcf(DATA / "phased.vcf", region="chr1:1-1000")], image_config(maf=0.0, size=(6, 3)))
    assert vcf_imgs.shape == (1, 6, 3) and set(np.unique(vcf_imgs)) <= {0, 1}


def test_read_ms_takes_the_sample_size_from_msms_and_headerless_files(tmp_path):
    """msms states it after -ms (the seed line must not be read as one); a file without a command line
    takes it from the first replicate."""
    body = "//\nsegsites: 2\npositions: 0.25 0.75\n01\n11\n10\n"
    (tmp_path / "msms.ms").write_text("msms -N 10000 -ms 3 1 -t 5\n16789 2 3\n\n" + body)
    (tmp_path / "bare.ms").write_text(body + "\n" + body)
    for name, n_reps in (("msms.ms", 1), ("bare.ms", 2)):
        reps = read_ms(tmp_path / name)
        assert len(reps) == n_reps and reps[0].matrix.tolist() == [[0, 1], [1, 1], [1, 0]], name
        assert reps[0].positions.tolist() == [0.25, 0.75]
