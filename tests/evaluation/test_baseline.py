"""The rule-based labeller on a table of sentences: negation, hedging, clinical question, normal for age."""

from __future__ import annotations

import pytest

from daemon.evaluation.baseline import (
    SCORE_NEGATED,
    SCORE_POSITIVE,
    SCORE_UNCERTAIN,
    label_report,
    score_report,
    strip_ignored_sections,
)
from daemon.labels import LABEL_KEYS

# (report text, labels expected to be 1; every other label is expected 0)
CASES: list[tuple[str, set[str]]] = [
    # plain positives
    ("Acute infarct in the left MCA territory with restricted diffusion.", {"acute_stroke"}),
    ("Large enhancing mass in the right frontal lobe with vasogenic oedema.", {"mass"}),
    ("Generalised cerebral atrophy, advanced for age.", {"atrophy"}),
    ("7 mm aneurysm of the anterior communicating artery.", {"vascular"}),
    ("Moderate chronic small vessel ischaemic change.", {"small_vessel_disease"}),
    ("Multiple periventricular and juxtacortical demyelinating plaques, typical of MS.", {"inflammation"}),
    ("Old left MCA territory infarct with encephalomalacia and gliosis.", {"encephalomalacia"}),
    ("Chronic right subdural haematoma.", set()),  # abnormal only
    ("Obstructive hydrocephalus.", set()),
    # negation, before and after, lists
    ("No acute infarct.", None),
    ("There is no evidence of restricted diffusion.", None),
    ("No acute infarct, haemorrhage, hydrocephalus or mass lesion.", None),
    ("Intracranial aneurysm excluded.", None),
    ("Demyelination is not demonstrated.", None),
    ("Negative for intracranial metastases.", None),
    ("Without evidence of venous sinus thrombosis.", None),
    ("The previously seen thrombus in the superior sagittal sinus has resolved.", None),
    ("White matter changes of small vessel disease rather than demyelination.", {"small_vessel_disease"}),
    ("T2 lesion without enhancement, in keeping with a low-grade glioma.", {"mass"}),
    # chronic is not acute
    ("No acute infarct. Old right PCA infarct.", {"encephalomalacia"}),
    # hedging is positive under the policy
    ("Possible small cavernoma in the left frontal lobe.", {"vascular"}),
    ("Appearances are suggestive of demyelination.", {"inflammation"}),
    ("A small meningioma cannot be excluded.", {"mass"}),
    ("Left frontal lesion, ?metastasis.", {"mass"}),
    # clinical question only
    ("Clinical details: ?stroke\nFindings: The brain is structurally normal. No restricted diffusion.", None),
    ("History: known MS.\n\nFindings:\nNormal appearances of the brain.", None),
    ("INDICATION: r/o aneurysm\nFINDINGS: Normal MRA.", None),
    ("Hx: ?MS. Multiple periventricular demyelinating plaques with Dawson's fingers.", {"inflammation"}),
    ("MRI HEAD\nQuery demyelinating disease, ?CVA.\nNormal MRI brain.", None),  # a request line without heading
    ("Recent lacunar infarction, right internal capsule.", {"acute_stroke"}),
    ("Old lacunar infarct in the left thalamus.", {"small_vessel_disease"}),
    # normal for age and trivial incidental findings
    ("A few punctate white matter foci, normal for age.", None),
    ("Mild generalised volume loss, appropriate for the patient's age.", None),
    ("Multiple white matter hyperintensities, more than expected for age.", {"small_vessel_disease"}),
    ("Minor mucosal thickening in the left maxillary sinus. Otherwise normal.", None),
    ("Small pineal cyst. Normal MRI brain.", None),
    # follow-up wording
    ("Stable MS lesions. No new or enhancing lesions.", {"inflammation"}),
    ("Left sphenoid wing meningioma, unchanged since the prior study.", {"mass"}),
]


@pytest.mark.parametrize(("text", "positives"), CASES)
def test_sentence_table(text: str, positives: set[str] | None) -> None:
    labels = label_report(text)
    expected_categories = positives or set()
    for key in LABEL_KEYS[1:]:
        assert labels[key] == int(key in expected_categories), (key, text)
    expected_abnormal = positives is not None
    assert labels["abnormal"] == int(expected_abnormal), ("abnormal", text)


def test_scores_distinguish_certain_uncertain_and_denied() -> None:
    assert score_report("Cavernoma in the pons.")["vascular"] == SCORE_POSITIVE
    assert score_report("Possible cavernoma in the pons.")["vascular"] == SCORE_UNCERTAIN
    assert score_report("No cavernoma.")["vascular"] == SCORE_NEGATED
    assert score_report("Normal study.")["vascular"] == 0.0


def test_hedged_then_denied_scores_below_threshold() -> None:
    text = "Findings: Possible aneurysm at the left MCA bifurcation.\nConclusion: No aneurysm."
    assert 0.0 < score_report(text)["vascular"] < 0.5


def test_clinical_section_is_dropped_but_findings_kept() -> None:
    text = "CLINICAL DETAILS:\n?stroke, ?MS\n\nFINDINGS:\nNo abnormality.\nIMPRESSION: Normal."
    kept = strip_ignored_sections(text)
    assert "stroke" not in kept and "FINDINGS" in kept and "Normal." in kept
