"""Train the demo fraud models from synthetic data made by the project (run by `make setup`).

Features are computed with the external-state job's own FeatureComputer, so the models see at
training time exactly what they see in production. Writes, for each model, an artifact and a model
card (with the artifact's sha256) under artifacts/models/<model_id>/, and an MLServer model-settings
file for the remote deployment of the champion.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from jobs.external_state.features import EntityState, FeatureComputer
from model_udfs.base import sha256_of
from schemas.features import FEATURE_NAMES, FEATURE_VERSION, feature_vector
from schemas.records import Request
from training.synthetic import training_stream

MODELS = [
    # (model_id, version, estimator factory, description)
    ("fraud-champion", "1.0.0", "logreg", "logistic regression on the v1 features"),
    ("fraud-champion", "1.1.0", "forest-small", "random forest on the v1 features (the champion's next "
                                               "version: catches more fraud than 1.0.0 at p >= 0.5)"),
    ("fraud-challenger", "2.0.0", "forest", "random forest on the v1 features"),
]


def build_dataset(n: int, seed: int = 11):
    import numpy as np

    fc = FeatureComputer()
    states: dict[str, EntityState] = {}
    X, y = [], []
    for txn in training_stream(n, seed=seed):
        req = Request.model_validate(txn.request)
        st = states.setdefault(req.entity_id, EntityState())
        f = fc.update(st, req)
        X.append(feature_vector(txn.request, f.model_dump()))
        y.append(1 if txn.is_fraud else 0)
    return np.asarray(X, dtype=float), np.asarray(y, dtype=int)


def make_estimator(kind: str):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "logreg":
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, class_weight="balanced"))
    if kind == "forest-small":
        return RandomForestClassifier(n_estimators=20, max_depth=6, random_state=1, n_jobs=1,
                                      class_weight="balanced")
    if kind == "forest":
        return RandomForestClassifier(n_estimators=30, max_depth=8, random_state=0, n_jobs=1,
                                      class_weight="balanced")
    raise ValueError(kind)


def train_all(out_dir: Path, n: int = 20_000, progress=print) -> dict[str, Path]:
    import joblib
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split

    progress(f"building {n} synthetic transactions and their features")
    X, y = build_dataset(n)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
    cards: dict[str, Path] = {}
    for model_id, version, kind, description in MODELS:
        est = make_estimator(kind).fit(X_tr, y_tr)
        auc = roc_auc_score(y_te, est.predict_proba(X_te)[:, 1])
        mdir = out_dir / model_id / version
        mdir.mkdir(parents=True, exist_ok=True)
        artifact = mdir / "model.joblib"
        joblib.dump(est, artifact)
        card = {
            "model_id": model_id,
            "version": version,
            "runner": "model_udfs.sklearn_runner:SklearnRunner",
            "artifact": "model.joblib",
            "sha256": sha256_of(artifact),
            "feature_version": FEATURE_VERSION,
            "params": {"feature_names": list(FEATURE_NAMES)},
            "timeout_ms": 500,
            "capacity": 100,
            "description": f"{description}; test AUC {auc:.3f} on {len(y_te)} synthetic transactions "
                           f"({int(y_te.sum())} fraud)",
        }
        (mdir / "card.json").write_text(json.dumps(card, indent=2) + "\n")
        # the same artifact served by MLServer (mlserver-sklearn), for the remote runner
        (mdir / "model-settings.json").write_text(json.dumps({
            "name": model_id, "implementation": "mlserver_sklearn.SKLearnModel",
            "parameters": {"uri": "./model.joblib", "version": version,
                           "extra": {"predict_fn": "predict_proba"}},
        }, indent=2) + "\n")
        cards[f"{model_id}@{version}"] = mdir / "card.json"
        progress(f"trained {model_id}@{version}: AUC {auc:.3f}")
    return cards


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default="artifacts/models")
    p.add_argument("-n", type=int, default=20_000)
    a = p.parse_args(argv)
    train_all(Path(a.out), a.n)


if __name__ == "__main__":
    main()
