"""The MovieLens users as canonical users: the demographics that 100k and 1m ship.

The other releases have no users file; their users get no attributes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from recpipe.errors import DataError
from recpipe.log import get_logger
from recpipe.schema import first_bad_row
from recpipe.sources.movielens.files import _Files
from recpipe.sources.movielens.parsing import _int_ids, _split_fields
from recpipe.sources.movielens.variants import _Layout

log = get_logger("movielens")


# ml-1m users.dat stores occupations as codes; these are the names its README gives.
OCCUPATIONS_1M = {
    0: "other",
    1: "academic/educator",
    2: "artist",
    3: "clerical/admin",
    4: "college/grad student",
    5: "customer service",
    6: "doctor/health care",
    7: "executive/managerial",
    8: "farmer",
    9: "homemaker",
    10: "K-12 student",
    11: "lawyer",
    12: "programmer",
    13: "retired",
    14: "sales/marketing",
    15: "scientist",
    16: "self-employed",
    17: "technician/engineer",
    18: "tradesman/craftsman",
    19: "unemployed",
    20: "writer",
}


def _int_column(raw: pd.DataFrame, column: str, file: str) -> pd.Series:
    values = pd.to_numeric(raw[column].str.strip(), errors="coerce")
    bad = values.isna() | (values != np.floor(values))
    if bad.any():
        row = first_bad_row(bad)
        raise DataError(
            f"expected a whole number, found {raw[column].iloc[row - 1]!r}",
            file=file,
            column=column,
            row=row,
        )
    return values.astype("int64")


def _read_users_100k(files: _Files, layout: _Layout) -> pd.DataFrame | None:
    """u.user: id|age|gender|occupation|zip (zip codes stay text: some are Canadian)."""
    assert layout.users is not None
    if not files.has(layout.users):
        log.warning("%s not found: users without attributes", files.label(layout.users))
        return None
    file = files.label(layout.users)
    names = ["user id", "age", "gender", "occupation", "zip code"]
    raw = _split_fields(files.read_text(layout.users), "|", names, file)
    return pd.DataFrame(
        {
            "user_id": _int_ids(raw, "user id", file).astype(str),
            "age": _int_column(raw, "age", file),
            "gender": raw["gender"].str.strip(),
            "occupation": raw["occupation"].str.strip(),
            "zip": raw["zip code"].str.strip(),
        }
    )


def _read_users_1m(files: _Files, layout: _Layout) -> pd.DataFrame | None:
    """users.dat: UserID::Gender::Age::Occupation::Zip-code.

    ``age`` stays the README's bucket code, which is the bucket's lower bound (1 = under 18,
    18 = 18-24, ..., 56 = 56+); occupation codes become the README's names.
    """
    assert layout.users is not None
    if not files.has(layout.users):
        log.warning("%s not found: users without attributes", files.label(layout.users))
        return None
    file = files.label(layout.users)
    names = ["UserID", "Gender", "Age", "Occupation", "Zip-code"]
    raw = _split_fields(files.read_text(layout.users), "::", names, file)
    occupation = _int_column(raw, "Occupation", file)
    return pd.DataFrame(
        {
            "user_id": _int_ids(raw, "UserID", file).astype(str),
            "age": _int_column(raw, "Age", file),
            "gender": raw["Gender"].str.strip(),
            # An undocumented code stays visible as its number rather than becoming "other".
            "occupation": occupation.map(OCCUPATIONS_1M).fillna(occupation.astype(str)),
            "zip": raw["Zip-code"].str.strip(),
        }
    )
