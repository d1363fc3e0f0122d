"""Every default lives once, in the stage schemas: the typed config of an empty stage holds each of them."""

from __future__ import annotations

import dataclasses

import pytest

from hpc_popgen.config import from_params, to_params
from hpc_popgen.manifest import STAGE_KINDS, _deref, fill_defaults, load_schema
from hpc_popgen.stages import get_stage

# the smallest parameters each stage kind accepts (its schema's required keys)
EMPTY = {
    "simulate": {"store": "x.zarr", "classes": [0], "n_per_class": 1},
    "train": {"store": "x.zarr"},
    "evaluate": {},
    "scan": {"vcf": "x.vcf.gz"},
    "demography": {"input": {"afs": "x.fs"}},
}


def schema_defaults(schema: dict, root: dict, instance: dict, path: tuple = ()):
    """(key path, default) for every default reachable in ``instance`` (filled), depth first."""
    schema = _deref(schema, root)
    for key, sub in (schema.get("properties") or {}).items():
        sub = _deref(sub, root)
        if "default" in sub:
            yield path + (key,), sub["default"]
        if isinstance(instance.get(key), dict) and "properties" in sub:
            yield from schema_defaults(sub, root, instance[key], path + (key,))


@pytest.mark.parametrize("kind", STAGE_KINDS)
def test_config_of_an_empty_stage_holds_every_schema_default(kind):
    schema = load_schema(f"stages/{kind}.schema.json")
    params = fill_defaults(EMPTY[kind], schema)
    config = from_params(get_stage(kind).CONFIG, params)
    assert dataclasses.is_dataclass(config)
    checked = 0
    for path, default in schema_defaults(schema, schema, params):
        value = config
        for key in path:
            value = value[key] if isinstance(value, dict) else getattr(value, key)
        if isinstance(default, dict) and not default:  # an object of defaults: its keys are checked one by one
            assert value is not None, f"{kind}.{'.'.join(path)}: missing from the config"
            continue
        assert to_params(value) == default, f"{kind}.{'.'.join(path)}: config {value!r} != schema {default!r}"
        checked += 1
    assert checked > 0


@pytest.mark.parametrize("kind", STAGE_KINDS)
def test_configs_are_frozen_and_keyword_only(kind):
    cls = get_stage(kind).CONFIG
    params = fill_defaults(EMPTY[kind], load_schema(f"stages/{kind}.schema.json"))
    config = from_params(cls, params)
    field = dataclasses.fields(cls)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(config, field, None)
    with pytest.raises(TypeError):
        cls(*[getattr(config, f.name) for f in dataclasses.fields(cls)])
    # no field repeats a default of its own: the schema is the only home of defaults
    assert all(f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
               for f in dataclasses.fields(cls))


def test_every_predict_option_with_a_default_takes_it_from_a_schema():
    from hpc_popgen.cli.predict import predict
    from hpc_popgen.manifest import schema_default

    home = {"mc_samples": "predict.schema.json", "seed": "predict.schema.json",
            "level": ("stages/scan.schema.json", "hpdi_level"), "min_accessible": "stages/scan.schema.json"}
    with_default = {p.name: p.default for p in predict.params if isinstance(p.default, (int, float, str))}
    assert set(with_default) == set(home)  # a new option with a default needs a schema key
    for name, where in home.items():
        schema, key = where if isinstance(where, tuple) else (where, name)
        assert with_default[name] == schema_default(schema, key), name
    assert load_schema("predict.schema.json")["properties"]["mc_samples"]["default"] == 100_000
