"""Phrase tables for the synthetic report generator: the findings a head MRI report can state.

Pure data. Every template is written in UK spelling; the generator converts a
report to US spelling as a whole. Templates use ``{slot}`` fields that the
generator fills once per finding, so a finding's description, diagnosis and
conclusion agree on side, site and size. A finding's labels come from its
``cats`` and ``abnormal`` fields, never from its text.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

ALL_COURSES: tuple[str, ...] = ("stable", "new", "larger", "smaller")
CHRONIC_COURSES: tuple[str, ...] = ("stable", "larger")


@dataclass(frozen=True)
class Finding:
    """One thing a report can say is present.

    describe: full sentences for the findings section (may stop short of a diagnosis).
    dx: diagnosis noun phrases (for the conclusion, or appended to a description).
    cats: label categories this finding makes positive; abnormal: whether it makes abnormal positive.
    region: where a structured report with sub-headings puts it.
    course: how it may compare with a prior study.
    acute: whether it rules out "no acute intracranial abnormality".
    """

    name: str
    cats: tuple[str, ...]
    abnormal: bool
    describe: tuple[str, ...]
    dx: tuple[str, ...]
    region: str = "parenchyma"
    course: tuple[str, ...] = ALL_COURSES
    acute: bool = False
    extra_concepts: tuple[str, ...] = ()


def _f(
    name: str,
    cats: str,
    describe: list[str],
    dx: list[str],
    *,
    region: str = "parenchyma",
    course: tuple[str, ...] = ALL_COURSES,
    acute: bool = False,
    abnormal: bool = True,
    concepts: str = "",
) -> Finding:
    return Finding(
        name=name,
        cats=tuple(cats.split()),
        abnormal=abnormal,
        describe=tuple(describe),
        dx=tuple(dx),
        region=region,
        course=course,
        acute=acute,
        extra_concepts=tuple(concepts.split()),
    )


# --- acute stroke ------------------------------------------------------------------------------

ACUTE_STROKE: tuple[Finding, ...] = (
    _f("acute_mca_infarct", "acute_stroke", [
        "There is an area of restricted diffusion involving the {side} {mca_region}, with low ADC values and subtle corresponding FLAIR hyperintensity.",
        "Restricted diffusion with corresponding T2/FLAIR high signal and cortical swelling in the {side} MCA territory, involving the {mca_region}.",
        "A wedge-shaped region of high DWI signal and reduced ADC is present in the {side} {mca_region}.",
        "DWI demonstrates a large area of diffusion restriction in the {side} middle cerebral artery territory with loss of grey-white matter differentiation and sulcal effacement.",
        "Patchy foci of restricted diffusion within the {side} {mca_region}, confirmed on the ADC map.",
    ], [
        "acute {side} MCA territory infarct",
        "acute infarction in the {side} middle cerebral artery territory",
        "acute ischaemic stroke in the {side} MCA territory",
        "acute {side} MCA infarct",
        "recent infarct in the {side} MCA territory",
    ], acute=True, course=("new",)),
    _f("acute_lacunar_infarct", "acute_stroke", [
        "There is a {size_small} focus of restricted diffusion in the {side} {deep}, with corresponding high T2 signal.",
        "Small area of diffusion restriction in the {side} {deep} measuring {size_small}.",
        "A punctate focus of high DWI signal with low ADC is seen in the {side} {deep}.",
        "Within the {side} {deep} there is a small acute lesion showing restricted diffusion.",
    ], [
        "acute lacunar infarct in the {side} {deep}",
        "small acute infarct in the {side} {deep}",
        "acute small subcortical infarct ({side} {deep})",
        "recent lacunar infarction, {side} {deep}",
    ], acute=True, course=("new",)),
    _f("acute_pca_infarct", "acute_stroke", [
        "Restricted diffusion in the {side} occipital lobe and medial temporal lobe, in the posterior cerebral artery territory.",
        "There is cortical and subcortical diffusion restriction in the {side} occipital lobe with gyral swelling.",
        "High signal on DWI with matching low ADC in the {side} PCA territory, including the {side} thalamus.",
    ], [
        "acute {side} PCA territory infarct",
        "acute infarction in the {side} posterior cerebral artery territory",
        "acute {side} occipital infarct",
    ], acute=True, course=("new",)),
    _f("acute_cerebellar_infarct", "acute_stroke", [
        "There is restricted diffusion in the {side} cerebellar hemisphere in the PICA territory.",
        "Acute diffusion restriction within the inferior {side} cerebellar hemisphere and vermis.",
        "A region of DWI hyperintensity with low ADC involves the {side} cerebellar hemisphere, with mild swelling but no effacement of the fourth ventricle.",
    ], [
        "acute {side} cerebellar infarct",
        "acute {side} PICA territory infarction",
        "acute posterior circulation infarct in the {side} cerebellum",
    ], acute=True, course=("new",), region="posterior_fossa"),
    _f("acute_embolic_infarcts", "acute_stroke", [
        "Multiple small foci of restricted diffusion are scattered through both cerebral hemispheres, in more than one vascular territory.",
        "Several cortical and subcortical foci of diffusion restriction in the {side} frontal and parietal lobes and the contralateral occipital lobe.",
        "There are numerous punctate areas of high DWI signal with reduced ADC in the bilateral cerebral and cerebellar hemispheres.",
    ], [
        "multiple acute embolic infarcts",
        "acute infarcts in multiple territories, suggesting a central embolic source",
        "showers of acute emboli",
        "multifocal acute ischaemia",
    ], acute=True, course=("new",)),
    _f("acute_watershed_infarct", "acute_stroke", [
        "A chain of small foci of restricted diffusion runs along the {side} centrum semiovale in the internal watershed zone.",
        "Restricted diffusion in the {side} ACA/MCA border zone.",
        "There is diffusion restriction along the cortical watershed territory of the {side} hemisphere.",
    ], [
        "acute {side} watershed infarcts",
        "acute border zone infarction on the {side}",
        "acute haemodynamic (watershed) infarcts",
    ], acute=True, course=("new",)),
    _f("acute_pontine_infarct", "acute_stroke", [
        "There is a focus of restricted diffusion in the {side} paramedian pons.",
        "Acute diffusion restriction in the {side} pons extending to the pial surface.",
        "DWI shows a small area of high signal with low ADC in the {side} side of the pons.",
    ], [
        "acute {side} pontine infarct",
        "acute brainstem (pontine) infarction",
        "acute paramedian pontine infarct",
    ], acute=True, course=("new",), region="posterior_fossa"),
    _f("acute_thalamic_infarct", "acute_stroke", [
        "Restricted diffusion within the {side} thalamus.",
        "There is a small area of acute diffusion restriction in the {side} lateral thalamus.",
        "Bilateral paramedian thalamic foci of restricted diffusion.",
    ], [
        "acute {side} thalamic infarct",
        "acute thalamic infarction",
        "acute artery of Percheron infarct",
    ], acute=True, course=("new",)),
    _f("acute_aca_infarct", "acute_stroke", [
        "Restricted diffusion along the medial surface of the {side} frontal lobe and anterior corpus callosum.",
        "There is acute diffusion restriction in the {side} anterior cerebral artery territory.",
    ], [
        "acute {side} ACA territory infarct",
        "acute infarction in the {side} anterior cerebral artery territory",
    ], acute=True, course=("new",)),
    _f("subacute_infarct", "acute_stroke", [
        "There is an area of T2 and FLAIR hyperintensity with mild swelling in the {side} {lobe} lobe, with residual restricted diffusion and patchy gyriform enhancement.",
        "In the {side} {lobe} lobe there is cortical T2 hyperintensity with pseudonormalised ADC and gyral enhancement.",
        "The previously seen area of diffusion restriction in the {side} {lobe} lobe now shows T2 shine-through and gyriform enhancement.",
    ], [
        "subacute {side} {lobe} infarct",
        "subacute infarction in the {side} {lobe} lobe",
        "evolving subacute infarct, {side} {lobe} lobe",
        "late subacute infarct",
    ], acute=True, course=("stable", "smaller")),
    _f("haemorrhagic_transformation", "acute_stroke", [
        "Restricted diffusion in the {side} MCA territory with petechial blooming on SWI, consistent with haemorrhagic transformation.",
        "There is an acute infarct in the {side} {mca_region} with a small parenchymal haematoma within it.",
        "Acute infarction in the {side} {lobe} lobe with gyriform susceptibility on SWI.",
    ], [
        "acute {side} MCA infarct with haemorrhagic transformation",
        "acute infarct with petechial haemorrhagic transformation",
        "haemorrhagic transformation of an acute {side} {lobe} infarct",
    ], acute=True, course=("new",)),
    _f("acute_infarct_with_occlusion", "acute_stroke vascular", [
        "Restricted diffusion in the {side} MCA territory. The flow void of the {side} M1 segment is absent and there is no flow-related signal on the MR angiogram.",
        "There is an acute infarct in the {side} {mca_region}, with occlusion of the {side} middle cerebral artery on TOF angiography.",
        "Acute {side} cerebellar and occipital infarcts; the basilar artery tip shows no flow-related enhancement.",
    ], [
        "acute {side} MCA infarct secondary to M1 occlusion",
        "acute infarction with occlusion of the {side} middle cerebral artery",
        "acute posterior circulation infarcts with basilar artery occlusion",
    ], acute=True, course=("new",)),
    _f("hyperacute_mismatch", "acute_stroke", [
        "There is restricted diffusion in the {side} {mca_region} without corresponding FLAIR signal change (DWI-FLAIR mismatch).",
        "DWI positive, FLAIR negative lesion in the {side} insular cortex.",
    ], [
        "hyperacute {side} MCA territory infarct, likely less than 4.5 hours old",
        "hyperacute ischaemic stroke on the {side}",
    ], acute=True, course=("new",)),
    _f("venous_infarct", "acute_stroke vascular", [
        "There is a region of T2 hyperintensity, swelling and restricted diffusion in the {side} temporal lobe with a small focus of haemorrhage; the {side} transverse and sigmoid sinuses show no flow void and expanded T1 hyperintense thrombus.",
        "Thrombosis of the superior sagittal sinus with an acute venous infarct in the {side} parietal lobe.",
    ], [
        "cerebral venous sinus thrombosis with acute venous infarction",
        "acute {side} temporal venous infarct secondary to transverse sinus thrombosis",
    ], acute=True, course=("new",)),
)

# --- mass -------------------------------------------------------------------------------------

MASS: tuple[Finding, ...] = (
    _f("glioblastoma", "mass", [
        "There is a heterogeneously enhancing mass in the {side} {lobe} lobe measuring {dims}, with central necrosis, surrounding vasogenic oedema and {shift}.",
        "A large intra-axial {side} {lobe} lesion with thick irregular rim enhancement and a necrotic centre, measuring {dims}. Extensive surrounding T2 hyperintensity and mass effect, with effacement of the {side} lateral ventricle.",
        "Centred in the {side} {lobe} white matter there is a {dims} infiltrative lesion with nodular enhancement, elevated perfusion and crossing of the corpus callosum.",
        "{Side} {lobe} mass with irregular enhancement and necrosis, {dims}, causing {shift}.",
    ], [
        "{side} {lobe} high-grade glioma, likely glioblastoma",
        "glioblastoma in the {side} {lobe} lobe",
        "high grade primary glial tumour",
        "aggressive intra-axial neoplasm, most likely a glioblastoma",
        "{side} {lobe} GBM",
    ], acute=True),
    _f("low_grade_glioma", "mass", [
        "There is an expansile non-enhancing T2/FLAIR hyperintense lesion in the {side} {lobe} lobe, measuring {dims}, with mild local mass effect.",
        "Ill-defined infiltrative cortical and subcortical T2 hyperintensity with gyral expansion in the {side} {lobe} lobe; no enhancement or restricted diffusion.",
        "A {dims} T2-FLAIR mismatch lesion is present in the {side} {lobe} lobe.",
    ], [
        "low-grade glioma in the {side} {lobe} lobe",
        "probable low grade glioma",
        "diffuse glioma (likely low grade, IDH-mutant astrocytoma)",
        "non-enhancing intra-axial tumour, {side} {lobe} lobe",
    ], course=("stable", "larger")),
    _f("oligodendroglioma", "mass", [
        "A cortically based {side} frontal lesion with coarse calcification on SWI and patchy enhancement, measuring {dims}.",
    ], [
        "{side} frontal oligodendroglioma",
        "cortically based glioma, likely oligodendroglioma",
    ], course=("stable", "larger")),
    _f("meningioma", "mass", [
        "There is an extra-axial, dural-based, avidly and homogeneously enhancing mass {meningioma_loc}, measuring {dims}, with a dural tail.",
        "A {dims} well-circumscribed extra-axial lesion arises {meningioma_loc}. It is isointense to grey matter, enhances uniformly and has a broad dural base.",
        "Enhancing extra-axial mass {meningioma_loc} ({dims}) with a CSF cleft and mild indentation of the underlying brain.",
        "Small homogeneously enhancing dural-based lesion {meningioma_loc}, {size}, without oedema in the adjacent parenchyma.",
    ], [
        "meningioma {meningioma_loc}",
        "extra-axial lesion, likely a meningioma",
        "{size} meningioma",
        "extra-axial mass, typical of a meningioma",
    ], region="extra_axial", course=("stable", "larger", "new")),
    _f("metastases", "mass", [
        "There are {few} ring-enhancing lesions at the grey-white matter junction of both cerebral hemispheres, the largest in the {side} {lobe} lobe measuring {size}, with disproportionate surrounding oedema.",
        "Multiple enhancing intra-axial lesions in the supratentorial and infratentorial compartments, the largest {size} in the {side} cerebellar hemisphere.",
        "Post contrast, {few} small enhancing nodules are present in the {side} {lobe} lobe and cerebellum.",
    ], [
        "multiple cerebral metastases",
        "intracranial metastatic disease",
        "metastases",
        "brain metastases",
        "mets",
    ]),
    _f("solitary_metastasis", "mass", [
        "A solitary {size} enhancing lesion with surrounding vasogenic oedema at the {side} {lobe} grey-white junction.",
        "Single ring-enhancing lesion in the {side} cerebellar hemisphere, {size}, with moderate oedema.",
    ], [
        "solitary metastasis",
        "solitary cerebral metastasis, given the history",
        "single metastatic deposit",
        "metastasis (differential high-grade glioma)",
    ]),
    _f("vestibular_schwannoma", "mass", [
        "There is an enhancing lesion in the {side} internal auditory meatus measuring {size}, extending into the cerebellopontine angle cistern.",
        "A {size} avidly enhancing intracanalicular lesion on the {side}.",
        "Enhancing {side} CPA mass widening the porus acusticus, {dims}, contacting the middle cerebellar peduncle.",
    ], [
        "{side} vestibular schwannoma",
        "{side} intracanalicular vestibular schwannoma",
        "acoustic neuroma on the {side}",
        "{side} CPA schwannoma",
    ], region="posterior_fossa", course=("stable", "larger")),
    _f("pituitary_macroadenoma", "mass", [
        "There is a {dims} sellar mass with suprasellar extension, elevating and compressing the optic chiasm.",
        "The pituitary fossa is expanded by a {dims} enhancing mass that extends into the {side} cavernous sinus.",
        "A lobulated sellar and suprasellar lesion with a waist at the diaphragma sellae, abutting the chiasm, measures {dims}.",
    ], [
        "pituitary macroadenoma",
        "pituitary macroadenoma with chiasmatic compression",
        "sellar/suprasellar mass, most likely a pituitary macroadenoma",
    ], region="sella", course=("stable", "larger", "smaller")),
    _f("abscess", "mass", [
        "There is a {size} rim-enhancing lesion in the {side} {lobe} lobe with central restricted diffusion, a T2 hypointense rim and surrounding oedema.",
        "Smooth thin-walled ring-enhancing lesion in the {side} {lobe} lobe with marked central diffusion restriction.",
    ], [
        "cerebral abscess",
        "{side} {lobe} abscess",
        "pyogenic abscess",
    ], acute=True, course=("new", "smaller", "larger")),
    _f("colloid_cyst", "mass", [
        "A {size_small} T1 hyperintense rounded lesion at the foramen of Monro, without enhancement.",
        "There is a well-defined lesion in the anterior third ventricle at the foramina of Monro, with mild dilatation of the lateral ventricles.",
    ], [
        "colloid cyst of the third ventricle",
        "colloid cyst",
    ], region="ventricles", course=("stable", "larger")),
    _f("epidermoid", "mass", [
        "There is a lobulated CSF-like lesion in the {side} cerebellopontine angle that restricts diffusion and does not enhance, insinuating around the brainstem.",
        "A non-enhancing extra-axial lesion with high DWI signal in the {side} CPA cistern, displacing the trigeminal nerve.",
    ], [
        "{side} CPA epidermoid cyst",
        "epidermoid",
    ], region="posterior_fossa", course=("stable", "larger")),
    _f("lymphoma", "mass", [
        "There is a homogeneously enhancing periventricular mass in the {side} {deep} with restricted diffusion and moderate surrounding oedema.",
        "Enhancing lesions abutting the ependymal surface of the lateral ventricles and crossing the splenium of the corpus callosum, with low ADC values.",
    ], [
        "primary CNS lymphoma",
        "cerebral lymphoma",
        "lymphoma (differential high-grade glioma)",
    ], acute=True),
    _f("arachnoid_cyst_mass_effect", "mass", [
        "There is a large CSF-signal extra-axial cyst in the {side} middle cranial fossa, {dims}, exerting mass effect on the {side} temporal lobe with scalloping of the adjacent bone.",
        "A {dims} arachnoid cyst in the {side} posterior fossa compresses the cerebellar hemisphere and the fourth ventricle.",
    ], [
        "{side} arachnoid cyst with mass effect",
        "large arachnoid cyst causing mass effect",
    ], region="extra_axial", course=("stable", "larger")),
    _f("residual_tumour", "mass encephalomalacia", [
        "Post-operative changes of a {side} {lobe} craniotomy and resection cavity. There is nodular enhancement along the posterior margin of the cavity measuring {size}, with increasing surrounding FLAIR signal.",
        "Resection cavity in the {side} {lobe} lobe with gliosis of its walls; a new {size} enhancing nodule on its medial wall and elevated rCBV, in keeping with tumour recurrence.",
        "Surgical cavity in the {side} {lobe} lobe. Thick irregular enhancement at the cavity margin extends into the corpus callosum.",
    ], [
        "residual tumour at the margin of the resection cavity",
        "tumour recurrence in the {side} {lobe} lobe",
        "progressive disease at the resection site",
        "recurrent high-grade glioma",
    ], course=("new", "larger", "stable")),
    _f("craniopharyngioma", "mass", [
        "A mixed cystic and solid suprasellar mass with peripheral calcification and enhancing solid components, measuring {dims}.",
    ], [
        "craniopharyngioma",
        "suprasellar mass, likely craniopharyngioma",
    ], region="sella"),
    _f("haemangioblastoma", "mass", [
        "A cyst with an avidly enhancing mural nodule in the {side} cerebellar hemisphere, {dims}, with prominent flow voids.",
    ], [
        "{side} cerebellar haemangioblastoma",
        "haemangioblastoma",
    ], region="posterior_fossa"),
    _f("pineal_tumour", "mass", [
        "There is a {size} enhancing pineal region mass compressing the tectal plate, with dilatation of the lateral and third ventricles.",
    ], [
        "pineal region tumour with obstructive hydrocephalus",
        "pineal mass",
    ], region="ventricles"),
    _f("medulloblastoma_or_ependymoma", "mass", [
        "A {dims} mass arises in the fourth ventricle, restricts diffusion and enhances heterogeneously, with upstream hydrocephalus.",
        "Midline posterior fossa mass filling the fourth ventricle and extending through the foramen of Luschka on the {side}.",
    ], [
        "posterior fossa tumour (medulloblastoma versus ependymoma)",
        "fourth ventricular mass",
        "posterior fossa neoplasm",
    ], region="posterior_fossa"),
    _f("brainstem_glioma", "mass", [
        "Expansile T2 hyperintense infiltrative lesion of the pons encasing the basilar artery, without significant enhancement.",
    ], [
        "diffuse midline glioma of the pons",
        "brainstem glioma",
    ], region="posterior_fossa"),
    _f("dnet", "mass", [
        "A well-defined multicystic 'bubbly' cortical lesion in the {side} mesial temporal lobe without enhancement or mass effect.",
    ], [
        "DNET",
        "dysembryoplastic neuroepithelial tumour",
        "low-grade cortical tumour (DNET)",
    ], course=("stable",)),
    _f("toxoplasma_or_tuberculoma", "mass", [
        "There are {few} ring-enhancing lesions in the basal ganglia and corticomedullary junction, with an eccentric target sign.",
        "Conglomerate ring-enhancing lesions in the {side} {lobe} lobe with surrounding oedema.",
    ], [
        "toxoplasmosis",
        "tuberculomas",
        "infective ring-enhancing lesions",
    ], acute=True, course=("new", "smaller")),
    _f("trigeminal_schwannoma", "mass", [
        "A dumbbell-shaped enhancing lesion along the {side} trigeminal nerve extending from the prepontine cistern into Meckel's cave.",
    ], [
        "{side} trigeminal schwannoma",
    ], region="posterior_fossa", course=("stable", "larger")),
    _f("chordoma", "mass", [
        "A T2 hyperintense destructive mass centred on the clivus, extending posteriorly to indent the pons.",
    ], [
        "clival chordoma",
        "clival mass, likely chordoma",
    ], region="skull"),
)

# --- atrophy ----------------------------------------------------------------------------------

ATROPHY: tuple[Finding, ...] = (
    _f("generalised_atrophy", "atrophy", [
        "There is generalised cerebral volume loss, more than would be expected for the patient's age, with prominence of the sulci and ventricles.",
        "Diffuse sulcal and ventricular enlargement, advanced for age.",
        "Global parenchymal volume loss is more marked than expected for age.",
        "Moderate to severe generalised atrophy with ex vacuo enlargement of the ventricular system.",
        "The ventricles and sulci are prominent for age, indicating volume loss.",
    ], [
        "generalised cerebral atrophy, advanced for age",
        "global volume loss beyond that expected for age",
        "premature generalised atrophy",
        "cerebral atrophy",
        "moderate global atrophy",
    ], region="volume", course=CHRONIC_COURSES),
    _f("mesial_temporal_atrophy", "atrophy", [
        "There is bilateral hippocampal volume loss, {side} greater than {oside} (MTA score {mta}), with widening of the choroidal fissures.",
        "Disproportionate bilateral medial temporal lobe atrophy with enlarged temporal horns.",
        "Coronal images show marked hippocampal atrophy bilaterally (Scheltens grade {mta}).",
    ], [
        "bilateral mesial temporal atrophy, a pattern seen in Alzheimer's disease",
        "hippocampal atrophy in keeping with Alzheimer's disease",
        "medial temporal lobe atrophy (MTA {mta})",
    ], region="volume", course=CHRONIC_COURSES),
    _f("frontotemporal_atrophy", "atrophy", [
        "There is marked frontal and anterior temporal lobe volume loss with 'knife-edge' gyri, {side} predominant.",
        "Asymmetric volume loss of the {side} frontal and temporal lobes with relative sparing of the posterior regions.",
    ], [
        "frontotemporal atrophy, in keeping with frontotemporal dementia",
        "frontotemporal lobar atrophy",
    ], region="volume", course=CHRONIC_COURSES),
    _f("parietal_atrophy", "atrophy", [
        "There is disproportionate biparietal volume loss including the precuneus and posterior cingulate gyri.",
        "Parietal predominant sulcal widening beyond that expected for age.",
    ], [
        "parietal predominant atrophy",
        "posterior cortical atrophy",
    ], region="volume", course=CHRONIC_COURSES),
    _f("cerebellar_atrophy", "atrophy", [
        "The cerebellar folia are prominent, with vermian and hemispheric volume loss.",
        "There is marked cerebellar volume loss with enlargement of the fourth ventricle.",
        "Superior vermian atrophy.",
    ], [
        "cerebellar atrophy",
        "cerebellar volume loss",
        "vermian atrophy",
    ], region="posterior_fossa", course=CHRONIC_COURSES),
    _f("midbrain_atrophy", "atrophy", [
        "Atrophy of the midbrain with a reduced midbrain to pons ratio ('hummingbird' sign).",
    ], [
        "midbrain atrophy, raising the possibility of progressive supranuclear palsy",
    ], region="posterior_fossa", course=CHRONIC_COURSES),
    _f("pontocerebellar_atrophy", "atrophy", [
        "Volume loss of the pons and middle cerebellar peduncles with a cruciform T2 signal in the pons ('hot cross bun' sign).",
    ], [
        "pontocerebellar atrophy, in keeping with MSA-C",
    ], region="posterior_fossa", course=CHRONIC_COURSES),
    _f("caudate_atrophy", "atrophy", [
        "Bilateral caudate head atrophy with boxlike frontal horns.",
    ], [
        "caudate atrophy, consistent with Huntington's disease",
    ], region="volume", course=CHRONIC_COURSES),
    _f("hemiatrophy", "atrophy", [
        "There is volume loss of the {side} cerebral hemisphere with ipsilateral ventricular enlargement and calvarial thickening.",
    ], [
        "{side} cerebral hemiatrophy",
    ], region="volume", course=CHRONIC_COURSES),
    _f("focal_temporal_atrophy", "atrophy", [
        "Focal atrophy of the {side} anterior temporal pole, more marked inferiorly.",
    ], [
        "{side} anterior temporal lobe atrophy (semantic variant pattern)",
        "focal {side} temporal atrophy",
    ], region="volume", course=CHRONIC_COURSES),
    _f("callosal_atrophy", "atrophy", [
        "Diffuse thinning of the corpus callosum and global volume loss, advanced for age.",
    ], [
        "atrophy of the corpus callosum with global volume loss",
    ], region="volume", course=CHRONIC_COURSES),
)

# --- vascular ---------------------------------------------------------------------------------

VASCULAR: tuple[Finding, ...] = (
    _f("aneurysm", "vascular", [
        "A {size_small} saccular aneurysm arises from the {aneurysm_loc}.",
        "On the TOF angiogram there is a {size_small} outpouching at the {aneurysm_loc}, in keeping with an aneurysm.",
        "There is a {size_small} broad-necked aneurysm at the {aneurysm_loc}, directed anteriorly.",
        "Small aneurysm ({size_small}) at the {aneurysm_loc}.",
    ], [
        "{size_small} {aneurysm_loc} aneurysm",
        "intracranial aneurysm at the {aneurysm_loc}",
        "saccular aneurysm",
        "unruptured {aneurysm_loc} aneurysm",
    ], region="vascular", course=("stable", "larger", "new")),
    _f("avm", "vascular", [
        "A tangle of serpiginous flow voids is present in the {side} {lobe} lobe, with enlarged draining veins to the superior sagittal sinus and no surrounding oedema.",
        "There is a {size} nidus of abnormal vessels in the {side} {lobe} lobe supplied by an enlarged {side} MCA branch.",
    ], [
        "{side} {lobe} arteriovenous malformation",
        "AVM in the {side} {lobe} lobe",
        "pial AVM",
    ], region="vascular", course=("stable",)),
    _f("cavernoma", "vascular", [
        "There is a {size_small} lesion in the {side} {lobe} lobe with a 'popcorn' appearance, a complete haemosiderin rim and marked blooming on SWI.",
        "A mixed signal lesion with a hypointense rim and blooming on SWI is present in the {side} {deep}, without oedema.",
        "In the pons there is a small mulberry-like lesion with a rim of haemosiderin.",
    ], [
        "cavernoma",
        "cavernous malformation",
        "cavernous angioma",
        "cerebral cavernoma",
    ], region="parenchyma", course=("stable", "larger", "new")),
    _f("multiple_cavernomas", "vascular", [
        "Multiple foci of blooming artefact on SWI throughout both hemispheres, the largest with a reticulated core.",
    ], [
        "multiple cavernomas (familial cavernomatosis)",
        "multiple cavernous malformations",
    ], region="parenchyma", course=("stable", "new")),
    _f("dva", "vascular", [
        "There is a developmental venous anomaly in the {side} {lobe} lobe, draining into a subependymal vein.",
        "A 'caput medusae' configuration of veins in the {side} cerebellar hemisphere drains into a transcortical vein.",
        "Incidental DVA in the {side} frontal lobe.",
    ], [
        "{side} {lobe} developmental venous anomaly",
        "DVA",
        "venous angioma",
    ], region="vascular", course=("stable",)),
    _f("dural_avf", "vascular", [
        "There are dilated cortical veins over the {side} hemisphere and multiple arterial feeders converging on the {side} transverse sinus, which shows early flow-related signal on TOF.",
        "Abnormal flow-related enhancement within the {side} sigmoid sinus on arterial phase imaging, with enlarged occipital artery branches.",
    ], [
        "dural arteriovenous fistula",
        "{side} transverse-sigmoid dural AV fistula",
        "dAVF with cortical venous reflux",
    ], region="vascular", course=("stable",)),
    _f("carotid_occlusion", "vascular", [
        "The normal flow void of the {side} internal carotid artery is absent.",
        "There is no flow-related signal in the {side} ICA on the MRA; the {side} MCA is reconstituted via the anterior communicating artery.",
        "Loss of the {side} ICA flow void from the skull base to the terminus.",
    ], [
        "{side} internal carotid artery occlusion",
        "occluded {side} ICA",
        "chronic {side} ICA occlusion",
    ], region="vascular", course=("stable", "new")),
    _f("stenosis", "vascular", [
        "There is high-grade stenosis of the {side} {vessel} on the MR angiogram.",
        "Focal narrowing of the {side} {vessel} with reduced distal flow-related signal.",
        "Severe stenosis at the origin of the {side} {vessel}.",
    ], [
        "{side} {vessel} stenosis",
        "intracranial atherosclerotic stenosis of the {side} {vessel}",
        "severe {side} {vessel} narrowing",
    ], region="vascular", course=("stable", "new", "larger")),
    _f("dissection", "vascular", [
        "There is crescentic T1 hyperintense intramural haematoma in the {side} {dissect_vessel} with narrowing of the flow void.",
        "The {side} {dissect_vessel} shows a tapered narrowing and an intimal flap on the fat-saturated T1 images.",
        "Expansion of the {side} {dissect_vessel} with a crescent of mural signal on T1 fat-saturated images.",
    ], [
        "{side} {dissect_vessel} dissection",
        "arterial dissection of the {side} {dissect_vessel}",
        "{side} {dissect_vessel} dissection with intramural haematoma",
    ], region="vascular", acute=True, course=("new", "stable")),
    _f("venous_sinus_thrombosis", "vascular", [
        "There is loss of the normal flow void in the {venous_sinus} with expanded T1 hyperintense intraluminal signal and a filling defect on the venogram.",
        "Filling defect within the {venous_sinus} on the contrast-enhanced MR venogram ('empty delta' sign).",
        "No flow-related signal in the {venous_sinus} on the MRV, with susceptibility along the vessel on SWI.",
    ], [
        "thrombosis of the {venous_sinus}",
        "cerebral venous sinus thrombosis",
        "dural venous sinus thrombosis",
        "CVST",
    ], region="vascular", acute=True, course=("new", "stable", "smaller")),
    _f("moyamoya", "vascular", [
        "There is narrowing of both terminal internal carotid arteries with numerous small collateral flow voids in the basal ganglia and leptomeningeal 'ivy sign' on FLAIR.",
        "Severe stenosis of the supraclinoid ICAs and proximal MCAs bilaterally with a network of basal collaterals.",
    ], [
        "moyamoya arteriopathy",
        "moyamoya disease",
        "moyamoya pattern of vasculopathy",
    ], region="vascular", course=("stable",)),
    _f("dolichoectasia", "vascular", [
        "The basilar artery is dilated and tortuous, measuring {size_small} in diameter and indenting the pons.",
        "Fusiform dilatation of the {side} vertebral artery and basilar trunk.",
    ], [
        "vertebrobasilar dolichoectasia",
        "fusiform basilar aneurysm",
    ], region="vascular", course=("stable", "larger")),
    _f("capillary_telangiectasia", "vascular", [
        "A faint brush-like area of enhancement in the pons with low signal on SWI and no mass effect or T2 change.",
    ], [
        "capillary telangiectasia of the pons",
    ], region="vascular", course=("stable",)),
    _f("carotid_cavernous_fistula", "vascular", [
        "The {side} superior ophthalmic vein is enlarged and the {side} cavernous sinus is distended with flow voids.",
    ], [
        "{side} carotid-cavernous fistula",
    ], region="vascular", course=("stable", "new")),
    _f("basilar_occlusion", "vascular", [
        "The basilar artery flow void is absent, with no flow-related signal on the TOF angiogram, and the posterior cerebral arteries fill via the posterior communicating arteries.",
    ], [
        "basilar artery occlusion",
    ], region="vascular", acute=True, course=("new",)),
)

# --- small vessel disease ---------------------------------------------------------------------

SMALL_VESSEL: tuple[Finding, ...] = (
    _f("wmh_moderate", "small_vessel_disease", [
        "There are multiple punctate and early confluent T2/FLAIR hyperintensities in the periventricular and deep white matter, more than expected for age.",
        "Patchy and confluent white matter hyperintensities in both cerebral hemispheres, in a distribution typical of small vessel disease.",
        "Scattered foci of high T2/FLAIR signal in the deep and periventricular white matter (Fazekas grade {fazekas}).",
        "Periventricular caps and bands and scattered deep white matter FLAIR hyperintensities.",
        "Multiple non-specific T2 hyperintense foci in the subcortical and periventricular white matter sparing the U-fibres and corpus callosum.",
    ], [
        "moderate chronic small vessel ischaemic change",
        "chronic small vessel disease (Fazekas {fazekas})",
        "white matter hyperintensities of presumed vascular origin",
        "chronic microvascular ischaemic changes",
        "small vessel ischaemic disease",
        "cerebral small vessel disease",
        "microangiopathic white matter change",
    ], region="white_matter", course=("stable", "larger")),
    _f("wmh_severe", "small_vessel_disease", [
        "There is extensive confluent T2/FLAIR hyperintensity throughout the periventricular and deep white matter of both cerebral hemispheres.",
        "Severe confluent periventricular and deep white matter signal change (Fazekas 3) with involvement of the pons.",
        "Widespread leukoaraiosis.",
    ], [
        "severe small vessel disease",
        "extensive chronic small vessel ischaemic change (Fazekas 3)",
        "advanced leukoaraiosis",
        "severe chronic microangiopathy",
    ], region="white_matter", course=("stable", "larger")),
    _f("wmh_mild", "small_vessel_disease", [
        "A few scattered foci of FLAIR hyperintensity in the deep white matter, slightly more than expected for the patient's age.",
        "Mild periventricular and subcortical white matter hyperintensity (Fazekas 1), somewhat more than usual at this age.",
        "Several small T2 hyperintense white matter foci, likely of small vessel aetiology.",
    ], [
        "mild small vessel disease",
        "mild chronic small vessel ischaemic change",
        "mild microvascular change",
        "early small vessel disease",
    ], region="white_matter", course=("stable", "larger")),
    _f("lacunes", "small_vessel_disease", [
        "There are old lacunes in the {side} {deep} and the contralateral corona radiata.",
        "A {size_small} CSF-filled cavity with a gliotic rim in the {side} {deep}, in keeping with a lacune.",
        "Chronic lacunar infarcts are present in both basal ganglia and the {side} thalamus.",
        "Multiple small chronic lacunes in the basal ganglia and pons.",
    ], [
        "old lacunar infarcts",
        "chronic lacunes in the {side} {deep}",
        "lacunes of presumed vascular origin",
        "established lacunar infarct, {side} {deep}",
    ], region="parenchyma", course=("stable", "new")),
    _f("deep_microbleeds", "small_vessel_disease", [
        "SWI demonstrates {few} microhaemorrhages in the basal ganglia, thalami and pons.",
        "Multiple punctate foci of susceptibility in a central distribution (deep grey nuclei and brainstem).",
        "A few microbleeds in the {side} thalamus and lentiform nucleus.",
    ], [
        "deep microhaemorrhages in keeping with hypertensive small vessel disease",
        "hypertensive microangiopathy",
        "deep cerebral microbleeds of small vessel disease type",
    ], region="parenchyma", course=("stable", "larger")),
    _f("pontine_ischaemia", "small_vessel_disease", [
        "There is patchy T2 hyperintensity in the central pons.",
        "Ill-defined central pontine T2 high signal sparing the periphery.",
    ], [
        "chronic small vessel ischaemia in the pons",
        "pontine small vessel disease",
    ], region="posterior_fossa", course=("stable", "larger")),
    _f("cadasil_pattern", "small_vessel_disease", [
        "Confluent white matter hyperintensities involving the anterior temporal poles and external capsules, with multiple lacunes.",
    ], [
        "severe small vessel disease with a CADASIL pattern",
    ], region="white_matter", course=("stable", "larger")),
    _f("svd_not_demyelination", "small_vessel_disease", [
        "There are scattered T2/FLAIR white matter hyperintensities in the deep white matter; they spare the corpus callosum, juxtacortical and infratentorial regions and the pattern is not typical of demyelination.",
        "Multiple small white matter lesions in the deep and subcortical white matter without ovoid periventricular or callosal lesions.",
    ], [
        "white matter changes most in keeping with small vessel disease rather than demyelination",
        "small vessel ischaemic change; no features of demyelination",
    ], region="white_matter", course=("stable", "larger")),
)

# --- inflammation (white matter inflammation / demyelination) ---------------------------------

INFLAMMATION: tuple[Finding, ...] = (
    _f("ms_typical", "inflammation", [
        "There are multiple ovoid T2/FLAIR hyperintense lesions in the periventricular white matter, orientated perpendicular to the lateral ventricles, with juxtacortical and infratentorial lesions.",
        "Numerous periventricular and callososeptal lesions (Dawson's fingers), lesions in the {side} middle cerebellar peduncle and in the pons.",
        "{few} demyelinating plaques are seen in the periventricular, juxtacortical and infratentorial white matter.",
        "Multifocal white matter lesions including periventricular, juxtacortical and infratentorial locations, fulfilling criteria for dissemination in space.",
        "Several ovoid lesions abutting the ventricular margins and the undersurface of the corpus callosum, and one in the {side} cerebellar hemisphere.",
    ], [
        "demyelination consistent with multiple sclerosis",
        "appearances typical of MS",
        "demyelinating disease",
        "multiple sclerosis",
        "white matter lesions in keeping with demyelination",
        "inflammatory demyelination",
    ], region="white_matter", course=("stable", "larger", "new")),
    _f("ms_active", "inflammation", [
        "One of the lesions in the {side} periventricular white matter shows incomplete ring enhancement after contrast, in keeping with active demyelination.",
        "There are {few} new T2 lesions compared with the prior study, two of which enhance.",
        "Two new enhancing lesions in the {side} centrum semiovale and juxtacortical white matter.",
    ], [
        "active demyelination",
        "new and enhancing demyelinating lesions indicating disease activity",
        "active MS plaques",
        "radiological progression of MS",
    ], region="white_matter", acute=True, course=("new",)),
    _f("ms_stable", "inflammation", [
        "The known periventricular and juxtacortical demyelinating lesions are unchanged in number and size. No new or enhancing lesions.",
        "Stable appearances of multiple sclerosis plaques. There are no new T2 lesions and no enhancement.",
        "The white matter lesions are unchanged compared with the previous study; none enhance.",
    ], [
        "stable demyelinating disease with no new or active lesions",
        "stable MS lesion load",
        "stable multiple sclerosis",
    ], region="white_matter", course=("stable",)),
    _f("cis_single_lesion", "inflammation", [
        "A solitary ovoid T2 hyperintense lesion in the {side} periventricular white matter abutting the ventricle, typical in morphology for demyelination.",
        "There is a single demyelinating lesion in the {side} middle cerebellar peduncle.",
    ], [
        "solitary demyelinating lesion",
        "demyelinating lesion, compatible with a clinically isolated syndrome",
    ], region="white_matter", course=("stable", "new")),
    _f("adem", "inflammation", [
        "There are multiple large, poorly marginated asymmetric T2 hyperintense lesions in the white matter of both hemispheres and in the {side} thalamus, with patchy enhancement.",
        "Bilateral asymmetric subcortical and deep white matter lesions of similar age with involvement of the deep grey matter.",
    ], [
        "acute disseminated encephalomyelitis",
        "ADEM",
        "monophasic demyelination, likely ADEM",
    ], region="white_matter", acute=True, course=("new", "smaller")),
    _f("nmosd", "inflammation", [
        "There is T2 hyperintensity in the area postrema and around the third ventricle, with a longitudinally extensive lesion in the upper cervical cord.",
        "Periependymal T2 signal abnormality around the fourth ventricle and hypothalamus.",
    ], [
        "NMOSD",
        "neuromyelitis optica spectrum disorder",
        "demyelination in an NMOSD pattern",
    ], region="white_matter", course=("new", "stable")),
    _f("pml", "inflammation", [
        "There is asymmetric subcortical T2 hyperintensity in the {side} {lobe} lobe involving the U-fibres, without mass effect or enhancement, with a sharp cortical border.",
    ], [
        "progressive multifocal leukoencephalopathy",
        "PML",
    ], region="white_matter", course=("new", "larger")),
    _f("tumefactive_demyelination", "inflammation", [
        "There is a {size} lesion in the {side} {lobe} white matter with an incomplete (open) ring of enhancement facing the cortex and relatively little mass effect for its size.",
    ], [
        "tumefactive demyelination",
        "tumefactive demyelinating lesion",
    ], region="white_matter", course=("new", "smaller")),
    _f("vasculitis_wm", "inflammation", [
        "Multifocal white matter T2 hyperintensities with punctate enhancement and small foci of restricted diffusion in several territories.",
        "Snowball lesions in the central corpus callosum and scattered white matter lesions.",
    ], [
        "white matter inflammation in keeping with CNS vasculitis",
        "inflammatory white matter lesions (Susac syndrome)",
        "vasculitic white matter inflammation",
    ], region="white_matter", course=("new", "stable")),
    _f("mogad", "inflammation", [
        "Fluffy, poorly demarcated T2 lesions in the pons and {side} middle cerebellar peduncle with bilateral optic nerve enhancement.",
    ], [
        "MOG antibody-associated demyelination",
        "MOGAD",
    ], region="white_matter", course=("new", "smaller")),
)

# --- encephalomalacia -------------------------------------------------------------------------

ENCEPHALOMALACIA: tuple[Finding, ...] = (
    _f("old_mca_infarct", "encephalomalacia", [
        "There is an established infarct in the {side} MCA territory with encephalomalacia, surrounding gliosis and ex vacuo dilatation of the {side} lateral ventricle.",
        "Area of cystic encephalomalacia and gliosis in the {side} {mca_region}, in keeping with a chronic infarct.",
        "Chronic {side} MCA territory infarct with volume loss and Wallerian degeneration of the {side} corticospinal tract.",
        "Old cortical infarct in the {side} {lobe} lobe.",
    ], [
        "old {side} MCA territory infarct",
        "chronic {side} {lobe} infarct",
        "established infarct with encephalomalacia",
        "chronic infarct",
        "old infarct",
    ], region="parenchyma", course=("stable",)),
    _f("old_cerebellar_infarct", "encephalomalacia", [
        "There is a small chronic infarct in the {side} cerebellar hemisphere with volume loss and gliosis.",
        "Cavitated old infarct in the inferior {side} cerebellum.",
    ], [
        "old {side} cerebellar infarct",
        "chronic cerebellar infarct",
    ], region="posterior_fossa", course=("stable",)),
    _f("old_pca_infarct", "encephalomalacia", [
        "Encephalomalacia and gliosis in the {side} occipital lobe in keeping with an old PCA territory infarct.",
    ], [
        "chronic {side} PCA infarct",
        "old {side} occipital infarct",
    ], region="parenchyma", course=("stable",)),
    _f("post_traumatic", "encephalomalacia", [
        "There is encephalomalacia and gliosis in the inferior frontal lobes and {side} anterior temporal pole, with haemosiderin staining on SWI.",
        "Bifrontal gliosis and volume loss with superficial haemosiderin, consistent with previous contusions.",
        "Post-traumatic encephalomalacia is seen in the {side} {lobe} lobe.",
    ], [
        "post-traumatic encephalomalacia",
        "old contusional injury",
        "sequelae of previous head injury with gliosis",
    ], region="parenchyma", course=("stable",)),
    _f("post_surgical", "encephalomalacia", [
        "Post-operative changes of a {side} {lobe} craniotomy with gliosis along the surgical tract.",
        "There is a {side} {lobe} resection cavity lined by gliosis. No abnormal enhancement to suggest residual or recurrent tumour.",
        "Previous {side} {lobe} lobectomy with a CSF-filled cavity and surrounding gliosis.",
        "Gliosis along the tract of the {side} frontal ventricular shunt catheter.",
    ], [
        "post-surgical gliosis",
        "post-operative cavity with no evidence of recurrent tumour",
        "stable post-surgical appearances",
        "post-operative encephalomalacia",
    ], region="parenchyma", course=("stable",)),
    _f("old_haemorrhage_cavity", "encephalomalacia", [
        "A slit-like cavity lined by haemosiderin in the {side} {deep}, in keeping with an old haemorrhage.",
        "There is an area of encephalomalacia with haemosiderin staining in the {side} {lobe} lobe at the site of the previous haematoma.",
    ], [
        "old haemorrhage with encephalomalacia",
        "chronic haemorrhagic cavity",
    ], region="parenchyma", course=("stable",)),
    _f("porencephaly", "encephalomalacia", [
        "There is a porencephalic cyst communicating with the {side} lateral ventricle.",
    ], [
        "porencephalic cyst",
        "porencephaly",
    ], region="parenchyma", course=("stable",)),
    _f("old_watershed_infarcts", "encephalomalacia", [
        "Gliosis and volume loss along the {side} cortical watershed territories, in keeping with old border zone infarcts.",
    ], [
        "chronic watershed infarcts",
        "old border zone infarction",
    ], region="parenchyma", course=("stable",)),
    _f("old_small_cortical_infarcts", "encephalomalacia", [
        "{few} small old cortical infarcts in the {side} {lobe} lobe and cerebellar hemispheres.",
        "Several small chronic cortical infarcts with local gliosis.",
    ], [
        "multiple old cortical infarcts",
        "chronic embolic infarcts",
    ], region="parenchyma", course=("stable", "new")),
    _f("perinatal_gliosis", "encephalomalacia", [
        "Periventricular gliosis and white matter volume loss with irregular ventricular margins, consistent with an old perinatal insult.",
    ], [
        "periventricular leukomalacia",
        "sequelae of perinatal hypoxic-ischaemic injury",
    ], region="white_matter", course=("stable",)),
)

# --- abnormal, outside the seven categories ---------------------------------------------------

OTHER_ABNORMAL: tuple[Finding, ...] = (
    _f("hydrocephalus", "", [
        "The lateral and third ventricles are dilated with transependymal oedema; the fourth ventricle is normal in size.",
        "There is dilatation of the ventricular system out of proportion to the sulci, with rounding of the frontal horns and periventricular oedema.",
        "Enlarged lateral ventricles with a temporal horn width of {size_small} and effacement of the sulci.",
    ], [
        "obstructive hydrocephalus",
        "communicating hydrocephalus",
        "hydrocephalus",
        "triventricular hydrocephalus, likely due to aqueduct stenosis",
    ], region="ventricles", acute=True),
    _f("nph", "", [
        "Ventriculomegaly disproportionate to sulcal enlargement, with tight high convexity sulci and enlarged sylvian fissures (DESH pattern). Evans index {evans}.",
    ], [
        "features suggestive of normal pressure hydrocephalus",
        "NPH",
    ], region="ventricles", course=("stable",)),
    _f("chronic_subdural", "", [
        "There is a {size_small} crescentic subdural collection over the {side} cerebral convexity, hyperintense on T1 and FLAIR, with mild mass effect.",
        "A {side} holohemispheric subdural haematoma of mixed age with internal septations, maximal thickness {size_small}.",
        "Thin bilateral subdural collections over the frontal convexities.",
    ], [
        "{side} chronic subdural haematoma",
        "subdural collection",
        "bilateral subdural hygromas",
        "{side} subdural haematoma",
    ], region="extra_axial", course=ALL_COURSES),
    _f("acute_subdural", "", [
        "There is an acute {side} subdural haematoma measuring {size_small} in maximal thickness with {shift}.",
    ], [
        "acute {side} subdural haematoma",
    ], region="extra_axial", acute=True, course=("new", "larger")),
    _f("extradural", "", [
        "There is a biconvex extradural haematoma over the {side} temporal convexity beneath a skull fracture.",
    ], [
        "{side} extradural haematoma",
        "epidural haematoma",
    ], region="extra_axial", acute=True, course=("new",)),
    _f("subarachnoid_haemorrhage", "", [
        "There is FLAIR hyperintensity and susceptibility in the sulci of the {side} {lobe} lobe in keeping with subarachnoid blood.",
        "Blood products are present in the basal cisterns and sylvian fissures.",
    ], [
        "subarachnoid haemorrhage",
        "convexity subarachnoid haemorrhage",
        "SAH",
    ], region="extra_axial", acute=True, course=("new",)),
    _f("intracerebral_haemorrhage", "", [
        "There is a {dims} intraparenchymal haematoma in the {side} {deep} with surrounding oedema and {shift}.",
        "An acute lobar haematoma in the {side} {lobe} lobe, {dims}, with a fluid level.",
        "There is a subacute haematoma in the {side} {lobe} lobe, T1 hyperintense peripherally.",
    ], [
        "acute {side} {deep} intracerebral haemorrhage",
        "{side} {lobe} lobar haematoma",
        "intraparenchymal haemorrhage",
        "hypertensive haemorrhage",
    ], acute=True, course=("new", "smaller")),
    _f("chiari", "", [
        "The cerebellar tonsils are pointed and lie {tonsil} mm below the foramen magnum, with crowding of the foramen magnum.",
        "There is tonsillar ectopia of {tonsil} mm with reduced CSF spaces at the craniocervical junction.",
    ], [
        "Chiari I malformation",
        "Chiari 1 malformation",
        "tonsillar ectopia (Chiari I)",
    ], region="posterior_fossa", course=("stable",)),
    _f("microadenoma", "", [
        "There is a {size_small} hypoenhancing lesion in the {side} side of the pituitary gland on the dynamic post-contrast sequence.",
        "A small area of delayed enhancement in the {side} anterior pituitary, measuring {size_small}.",
    ], [
        "pituitary microadenoma",
        "{size_small} pituitary microadenoma",
        "microadenoma",
    ], region="sella", course=("stable", "larger", "smaller")),
    _f("mesial_temporal_sclerosis", "", [
        "The {side} hippocampus is small and shows increased T2/FLAIR signal with loss of its internal architecture.",
        "There is increased FLAIR signal in the {side} hippocampus with loss of the normal digitations of the hippocampal head.",
    ], [
        "{side} mesial temporal sclerosis",
        "{side} hippocampal sclerosis",
        "MTS",
    ], region="parenchyma", course=("stable",)),
    _f("cortical_dysplasia", "", [
        "There is blurring of the grey-white matter junction in the {side} frontal lobe with a transmantle sign extending towards the ventricle.",
        "Focal cortical thickening and subcortical T2 hyperintensity in the {side} {lobe} lobe.",
    ], [
        "focal cortical dysplasia",
        "{side} {lobe} focal cortical dysplasia (type II)",
    ], region="parenchyma", course=("stable",)),
    _f("heterotopia", "", [
        "Nodules of grey matter signal line the walls of the lateral ventricles.",
        "A band of grey matter signal is present within the white matter of both hemispheres.",
    ], [
        "periventricular nodular heterotopia",
        "band heterotopia",
        "grey matter heterotopia",
    ], region="parenchyma", course=("stable",)),
    _f("pres", "", [
        "There is bilateral, largely symmetrical subcortical T2/FLAIR hyperintensity in the parieto-occipital lobes without restricted diffusion.",
    ], [
        "posterior reversible encephalopathy syndrome",
        "PRES",
    ], region="parenchyma", acute=True, course=("new", "smaller")),
    _f("wernicke", "", [
        "There is symmetrical T2 hyperintensity in the medial thalami, mammillary bodies and periaqueductal grey matter.",
    ], [
        "Wernicke encephalopathy",
    ], region="parenchyma", acute=True, course=("new",)),
    _f("cjd", "", [
        "There is cortical ribboning of restricted diffusion in the {side} frontal and parietal cortex and in both caudate heads.",
    ], [
        "appearances suspicious for Creutzfeldt-Jakob disease",
        "CJD",
    ], region="parenchyma", acute=True, course=("new", "larger")),
    _f("superficial_siderosis", "", [
        "There is a rim of low signal on SWI coating the surface of the cerebellum, brainstem and sylvian fissures.",
    ], [
        "superficial siderosis",
    ], region="extra_axial", course=("stable", "larger")),
    _f("intracranial_hypotension", "", [
        "There is smooth diffuse pachymeningeal enhancement, sagging of the brainstem and engorgement of the venous sinuses.",
    ], [
        "intracranial hypotension",
        "features of spontaneous intracranial hypotension",
    ], region="extra_axial", course=("new", "smaller")),
    _f("iih_signs", "", [
        "There is flattening of the posterior globes, distension of the optic nerve sheaths, a partially empty sella and narrowing of the distal transverse sinuses.",
    ], [
        "features in keeping with idiopathic intracranial hypertension",
        "raised intracranial pressure features",
    ], region="orbits", course=("stable", "new")),
    _f("leptomeningeal_enhancement", "", [
        "There is diffuse leptomeningeal enhancement over both cerebral convexities and in the basal cisterns.",
    ], [
        "leptomeningeal enhancement, likely meningitis",
        "meningitis",
    ], region="extra_axial", acute=True, course=("new", "smaller")),
    _f("contusions", "", [
        "Acute haemorrhagic contusions in the {side} frontal and temporal lobes with surrounding oedema.",
        "Multiple punctate microhaemorrhages at the grey-white junction and in the splenium of the corpus callosum, in keeping with diffuse axonal injury.",
    ], [
        "acute cerebral contusions",
        "diffuse axonal injury",
    ], region="parenchyma", acute=True, course=("new",)),
    _f("callosal_agenesis", "", [
        "The corpus callosum is absent, with parallel lateral ventricles and colpocephaly.",
    ], [
        "agenesis of the corpus callosum",
    ], region="parenchyma", course=("stable",)),
    _f("polymicrogyria", "", [
        "There is an irregular, thickened cortex with multiple small gyri around the {side} sylvian fissure.",
    ], [
        "{side} perisylvian polymicrogyria",
    ], region="parenchyma", course=("stable",)),
    _f("syrinx", "", [
        "There is a syrinx in the upper cervical cord extending from C2 to the lower limit of the images.",
    ], [
        "cervical syringomyelia",
    ], region="posterior_fossa", course=("stable", "larger")),
    _f("fibrous_dysplasia", "", [
        "Expansile ground-glass bone in the {side} sphenoid wing and orbital roof.",
    ], [
        "fibrous dysplasia of the skull base",
    ], region="skull", course=("stable",)),
)

# --- findings that are not abnormal (incidental, normal for age) ------------------------------

INCIDENTAL: tuple[Finding, ...] = (
    _f("sinus_mucosal", "", [
        "Minor mucosal thickening in the {side} maxillary sinus.",
        "Mild mucosal thickening of the ethmoid air cells.",
        "There is a small retention cyst in the {side} maxillary antrum.",
        "Incidental mucosal thickening in the paranasal sinuses.",
        "Mild paranasal sinus mucosal disease.",
    ], [
        "minor sinus mucosal thickening",
        "incidental maxillary sinus retention cyst",
    ], region="sinuses", abnormal=False),
    _f("mastoid_fluid", "", [
        "A small amount of fluid in the {side} mastoid air cells.",
        "Minor opacification of a few {side} mastoid air cells.",
    ], [
        "small {side} mastoid effusion",
    ], region="sinuses", abnormal=False),
    _f("arachnoid_granulation", "", [
        "An arachnoid granulation is noted in the {side} transverse sinus.",
        "A small filling defect in the {side} transverse sinus is in keeping with an arachnoid granulation.",
    ], [
        "arachnoid granulation (normal variant)",
    ], region="vascular", abnormal=False),
    _f("cavum_septum", "", [
        "There is a cavum septum pellucidum, a normal variant.",
        "Incidental cavum septum pellucidum et vergae.",
    ], [
        "cavum septum pellucidum (normal variant)",
    ], region="ventricles", abnormal=False),
    _f("pineal_cyst", "", [
        "There is a small simple pineal cyst measuring {size_small}.",
        "Incidental {size_small} pineal cyst without mass effect on the tectum.",
    ], [
        "incidental small pineal cyst",
        "small pineal cyst, of no clinical significance",
    ], region="parenchyma", abnormal=False),
    _f("mega_cisterna", "", [
        "There is a mega cisterna magna, a normal variant.",
        "Prominent retrocerebellar CSF space (mega cisterna magna).",
    ], [
        "mega cisterna magna",
    ], region="posterior_fossa", abnormal=False),
    _f("perivascular_spaces", "", [
        "A few prominent perivascular spaces are noted in the basal ganglia.",
        "Scattered small perivascular spaces, within normal limits.",
    ], [
        "prominent perivascular spaces (normal)",
    ], region="parenchyma", abnormal=False),
    _f("choroid_calcification", "", [
        "Physiological calcification of the choroid plexus and pineal gland.",
    ], [
        "physiological calcification",
    ], region="ventricles", abnormal=False),
    _f("ventricle_asymmetry", "", [
        "Mild asymmetry of the lateral ventricles, the {side} slightly larger, is a normal variant.",
    ], [
        "normal variant ventricular asymmetry",
    ], region="ventricles", abnormal=False),
    _f("hypoplastic_sinus", "", [
        "The {side} transverse sinus is hypoplastic, a normal variant.",
        "Dominant {oside} transverse sinus.",
    ], [
        "hypoplastic {side} transverse sinus (normal variant)",
    ], region="vascular", abnormal=False),
    _f("fetal_pca", "", [
        "There is a fetal origin of the {side} posterior cerebral artery, a normal variant.",
        "Hypoplastic {side} A1 segment, a normal variant.",
    ], [
        "fetal {side} PCA (normal variant)",
    ], region="vascular", abnormal=False),
    _f("infundibulum", "", [
        "A conical {size_small} dilatation at the origin of the {side} posterior communicating artery is in keeping with an infundibulum rather than an aneurysm.",
    ], [
        "{side} PComm infundibulum (normal variant)",
    ], region="vascular", abnormal=False),
    _f("partial_empty_sella", "", [
        "Partially empty sella, likely an incidental finding.",
        "The pituitary gland is flattened along the floor of the sella (partially empty sella), likely of no significance.",
    ], [
        "incidental partially empty sella",
    ], region="sella", abnormal=False),
    _f("septal_deviation", "", [
        "Nasal septal deviation to the {side}.",
        "Concha bullosa on the {side}.",
    ], [
        "incidental nasal septal deviation",
    ], region="sinuses", abnormal=False),
    _f("lens_replacement", "", [
        "Bilateral lens replacements.",
        "Post-operative changes of cataract surgery on the {side}.",
    ], [
        "previous cataract surgery",
    ], region="orbits", abnormal=False),
    _f("dental_artefact", "", [
        "Susceptibility artefact from dental work degrades the inferior frontal lobes on DWI and SWI.",
        "Some artefact from dental amalgam.",
    ], [
        "dental artefact",
    ], region="general", abnormal=False),
    _f("low_tonsils_normal", "", [
        "The cerebellar tonsils lie {tonsil_normal} mm below the foramen magnum, within normal limits.",
    ], [
        "low-lying cerebellar tonsils within normal limits",
    ], region="posterior_fossa", abnormal=False),
    _f("small_arachnoid_cyst_incidental", "", [
        "A small arachnoid cyst in the {side} middle cranial fossa, {size_small}, without mass effect.",
    ], [
        "small incidental arachnoid cyst",
    ], region="extra_axial", abnormal=False),
    _f("hyperostosis", "", [
        "Hyperostosis frontalis interna.",
        "Benign hyperostosis of the inner table of the frontal bone.",
    ], [
        "hyperostosis frontalis interna",
    ], region="skull", abnormal=False),
)

NORMAL_FOR_AGE: tuple[Finding, ...] = (
    _f("wm_foci_normal_age", "", [
        "A few scattered punctate foci of T2/FLAIR hyperintensity in the subcortical white matter, within normal limits for age.",
        "There are a few tiny non-specific white matter hyperintensities, which are normal for the patient's age.",
        "Occasional punctate white matter foci, in keeping with age.",
        "Minimal scattered white matter T2 hyperintensities, age-appropriate.",
        "A couple of non-specific white matter foci of no significance at this age.",
        "Scattered white matter hyperintensities, Fazekas 1, appropriate for age.",
        "A few non-specific punctate T2 hyperintense foci in the frontal white matter, a common finding at this age.",
        "Minor periventricular FLAIR hyperintensity, within normal limits for the patient's age.",
        "Mild white matter change, commensurate with age.",
        "Minor small vessel ischaemic change, within normal limits for age.",
        "Mild white matter changes of small vessel type, in keeping with the patient's age.",
    ], [
        "a few white matter foci, normal for age",
        "age-related white matter change only",
        "no white matter changes beyond those expected for age",
    ], region="white_matter", abnormal=False),
    _f("volume_normal_age", "", [
        "Brain volume is appropriate for the patient's age.",
        "Age-appropriate cerebral volume.",
        "Mild generalised volume loss, in keeping with the patient's age.",
        "The ventricles and sulci are commensurate with age.",
        "There is mild involutional change, appropriate for age.",
        "Mild prominence of the sulci and ventricles, normal for age.",
        "Hippocampal volumes are normal for age (MTA 1).",
        "Mild age-related cerebral volume loss.",
        "Cerebral volume is within normal limits for age.",
        "Involutional changes only, in keeping with age.",
        "Mild age-related atrophy.",
        "Mild generalised atrophy, normal for age.",
    ], [
        "age-appropriate involutional change",
        "volume normal for age",
        "no atrophy beyond that expected for age",
        "age-related involutional changes only",
    ], region="volume", abnormal=False),
)

# More wordings per finding (describe, dx), kept apart so the main tables stay readable.
_MORE_WORDINGS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "acute_mca_infarct": (
        ("Cytotoxic oedema with DWI hyperintensity and ADC hypointensity in the {side} frontal and parietal cortex.",
         "Acute ischaemic change is seen in the {side} {mca_region} with true diffusion restriction.",
         "An acute infarct involves the {side} {mca_region}."),
        ("acute stroke in the {side} MCA territory", "acute {side} hemispheric infarct", "{side} MCA CVA",
         "acute ischaemic infarct, {side} MCA territory"),
    ),
    "acute_lacunar_infarct": (
        ("A tiny DWI-bright lesion with low ADC is present in the {side} {deep}.",),
        ("acute lacunar stroke", "acute small vessel infarct in the {side} {deep}", "acute lacune, {side} {deep}"),
    ),
    "subacute_infarct": (
        ("Evolving infarct in the {side} {lobe} lobe with T2 hyperintensity, swelling and faint enhancement.",),
        ("subacute ischaemic stroke", "recent ({side} {lobe}) infarct, subacute"),
    ),
    "glioblastoma": (
        ("{Side} {lobe} intra-axial necrotic rim-enhancing tumour ({dims}) with marked perilesional oedema.",),
        ("malignant glioma", "primary brain tumour, most likely glioblastoma (WHO grade 4)",
         "high-grade astrocytoma"),
    ),
    "meningioma": (
        ("Incidental {size} meningioma {meningioma_loc}.",
         "Dural-based extra-axial lesion {meningioma_loc}, avidly enhancing, {size}, no underlying oedema."),
        ("small incidental meningioma", "meningioma", "dural-based lesion in keeping with meningioma"),
    ),
    "metastases": (
        ("Several enhancing lesions scattered through both hemispheres and the cerebellum, the largest {size}.",),
        ("metastatic deposits", "cerebral metastatic disease", "multiple brain metastases"),
    ),
    "generalised_atrophy": (
        ("Prominent sulci and ventricles, out of proportion to the patient's age.",
         "Cerebral volume is reduced, beyond what is expected at this age."),
        ("global cerebral atrophy", "generalised volume loss, more than expected for age", "brain atrophy",
         "diffuse cerebral volume loss"),
    ),
    "mesial_temporal_atrophy": (
        ("The hippocampi are small bilaterally with enlarged temporal horns, more than expected for age.",),
        ("disproportionate hippocampal atrophy", "bilateral hippocampal volume loss (MTA {mta})"),
    ),
    "aneurysm": (
        ("Incidental {size_small} aneurysm at the {aneurysm_loc}.",
         "TOF MRA shows a {size_small} saccular outpouching from the {aneurysm_loc}."),
        ("berry aneurysm at the {aneurysm_loc}", "small {aneurysm_loc} aneurysm", "incidental intracranial aneurysm"),
    ),
    "cavernoma": (
        ("Small focus of blooming on SWI with a T2 hyperintense core and dark rim in the {side} {lobe} lobe.",),
        ("small cavernous malformation", "cavernous haemangioma", "cerebral cavernoma"),
    ),
    "dva": (
        ("Linear enhancing vessel with radiating medullary veins in the {side} {lobe} lobe, a DVA.",),
        ("incidental DVA", "developmental venous anomaly (venous angioma)"),
    ),
    "wmh_moderate": (
        ("Scattered non-specific T2/FLAIR hyperintensities in the subcortical and deep white matter, more than "
         "usual for age.",
         "Moderate burden of periventricular and deep white matter FLAIR signal change.",
         "Confluent periventricular white matter high signal with scattered deep foci."),
        ("chronic microvascular ischaemic disease", "small vessel disease (Fazekas grade {fazekas})",
         "moderate white matter disease of presumed vascular origin", "chronic small vessel ischaemia",
         "non-specific white matter changes, most likely chronic small vessel ischaemic change"),
    ),
    "lacunes": (
        ("Small old lacunar infarct in the {side} {deep}.",),
        ("chronic lacunar infarcts in the basal ganglia", "old lacunes"),
    ),
    "ms_typical": (
        ("Multiple T2 hyperintense lesions in the periventricular white matter, corpus callosum and brainstem, "
         "some with an ovoid configuration.",
         "There are {few} white matter lesions in a distribution typical of demyelination."),
        ("MS", "multiple sclerosis plaques", "demyelinating plaques", "lesion distribution typical of MS"),
    ),
    "old_mca_infarct": (
        ("There is established infarction with tissue loss in the {side} {mca_region}.",
         "Chronic {side} MCA territory infarct with surrounding gliosis and haemosiderin staining."),
        ("old {side} MCA stroke", "established {side} MCA territory infarction", "chronic stroke",
         "previous {side} hemispheric infarct", "old stroke"),
    ),
    "post_traumatic": (
        ("Old contusional change in the {side} frontal and temporal lobes with gliosis and haemosiderin.",),
        ("old traumatic brain injury", "chronic post-traumatic change", "established contusional injury"),
    ),
    "hydrocephalus": (
        ("The ventricles are enlarged with periventricular transependymal CSF flow.",),
        ("acute hydrocephalus", "ventricular dilatation (hydrocephalus)"),
    ),
    "chronic_subdural": (
        ("Thin {side} convexity subdural collection, {size_small}, without mass effect.",),
        ("small {side} subdural haematoma", "chronic SDH"),
    ),
}


def _with_more_wordings(pool: tuple[Finding, ...]) -> tuple[Finding, ...]:
    def extended(finding: Finding) -> Finding:
        describe, dx = _MORE_WORDINGS.get(finding.name, ((), ()))
        return replace(finding, describe=finding.describe + describe, dx=finding.dx + dx)

    return tuple(extended(finding) for finding in pool)


ACUTE_STROKE = _with_more_wordings(ACUTE_STROKE)
MASS = _with_more_wordings(MASS)
ATROPHY = _with_more_wordings(ATROPHY)
VASCULAR = _with_more_wordings(VASCULAR)
SMALL_VESSEL = _with_more_wordings(SMALL_VESSEL)
INFLAMMATION = _with_more_wordings(INFLAMMATION)
ENCEPHALOMALACIA = _with_more_wordings(ENCEPHALOMALACIA)
OTHER_ABNORMAL = _with_more_wordings(OTHER_ABNORMAL)

CATEGORY_FINDINGS: dict[str, tuple[Finding, ...]] = {
    "acute_stroke": ACUTE_STROKE,
    "mass": MASS,
    "atrophy": ATROPHY,
    "vascular": VASCULAR,
    "small_vessel_disease": SMALL_VESSEL,
    "inflammation": INFLAMMATION,
    "encephalomalacia": ENCEPHALOMALACIA,
}
