"""Phrase tables for the synthetic report generator: negations, questions, normal statements, headings.

Pure data, UK spelling (the generator converts whole reports to US spelling).
Statements that deny something (``No restricted diffusion.``) are filtered by
the generator against what the report says is present, so a report never
contradicts itself; see ``generator.concepts_of``.
"""

from __future__ import annotations

# --- hard negatives per label: named, then denied, queried only, or explained away -----------

NEGATIONS: dict[str, tuple[str, ...]] = {
    "acute_stroke": (
        "No restricted diffusion to suggest acute infarction.",
        "There is no evidence of acute infarction.",
        "No acute infarct.",
        "DWI: no restricted diffusion.",
        "No diffusion restriction.",
        "No acute ischaemic change.",
        "Diffusion-weighted imaging is normal.",
        "No evidence of recent ischaemia.",
        "No acute territorial infarct is seen.",
        "Acute infarction is excluded.",
        "No DWI abnormality to suggest an acute stroke.",
        "There is no acute or subacute infarct.",
        "No convincing acute infarct.",
        "No area of restricted diffusion is identified.",
        "Negative for acute infarct.",
        "Acute ischaemia: none.",
        "The diffusion-weighted images show no acute infarct.",
        "No evidence of an acute ischaemic event.",
    ),
    "mass": (
        "No mass lesion.",
        "No intracranial mass or mass effect.",
        "No space-occupying lesion.",
        "No evidence of intracranial metastases.",
        "No enhancing lesion to suggest metastatic disease.",
        "No abnormal intracranial enhancement.",
        "No focal intra-axial or extra-axial lesion.",
        "No cerebellopontine angle or internal auditory meatus lesion; no vestibular schwannoma.",
        "There is no intracranial tumour.",
        "No suspicious enhancing lesion.",
        "The pituitary gland is normal in size, with no adenoma.",
        "Negative for intracranial neoplasm.",
        "No SOL.",
        "There is no space occupying lesion or midline shift.",
        "Mass lesion excluded.",
        "No abnormal enhancement after gadolinium.",
    ),
    "atrophy": (
        "No atrophy.",
        "Brain volume is normal.",
        "No generalised or focal atrophy.",
        "The hippocampi are normal in volume and signal.",
        "No disproportionate hippocampal atrophy.",
        "No focal volume loss.",
        "No cerebellar atrophy.",
        "No evidence of lobar atrophy.",
        "Normal brain volume; no atrophy beyond that expected for age.",
        "There is no significant cerebral volume loss.",
        "No mesial temporal atrophy (MTA 0).",
    ),
    "vascular": (
        "Normal flow voids in the major intracranial arteries and venous sinuses.",
        "No intracranial aneurysm.",
        "No intracranial aneurysm greater than 2 mm on the TOF angiogram.",
        "No vascular malformation.",
        "No AVM or cavernoma.",
        "The dural venous sinuses are patent.",
        "No evidence of venous sinus thrombosis.",
        "No arterial dissection.",
        "The circle of Willis is normal.",
        "No significant intracranial arterial stenosis.",
        "No evidence of dissection on the fat-saturated T1 images.",
        "The intracranial MR angiogram is unremarkable.",
        "The MR venogram shows normal flow in the dural venous sinuses.",
        "No aneurysm or vascular malformation identified.",
        "Aneurysm excluded.",
    ),
    "small_vessel_disease": (
        "No significant white matter disease.",
        "No white matter hyperintensities.",
        "No small vessel disease.",
        "No microhaemorrhages on SWI.",
        "No lacunes.",
        "The white matter is normal.",
        "No evidence of chronic small vessel ischaemic change.",
        "No microbleeds.",
        "Normal white matter signal.",
        "No microangiopathic change.",
        "No SVD.",
    ),
    "inflammation": (
        "No demyelinating lesions.",
        "No white matter lesions to suggest demyelination.",
        "No features of demyelination.",
        "No lesions typical of MS.",
        "No evidence of inflammatory demyelination.",
        "No callosal, juxtacortical or infratentorial lesions.",
        "No evidence of demyelinating disease.",
        "Negative for demyelination.",
        "No MS plaques are seen.",
        "Demyelination is not demonstrated.",
    ),
    "encephalomalacia": (
        "No established infarcts.",
        "No evidence of previous infarction.",
        "No gliosis or encephalomalacia.",
        "No areas of established tissue loss.",
        "No post-traumatic parenchymal change.",
        "No evidence of old injury.",
        "No focal parenchymal volume loss or gliosis.",
        "No old infarcts.",
        "No chronic infarct.",
    ),
    "abnormal": (
        "No intracranial haemorrhage.",
        "No hydrocephalus.",
        "No extra-axial collection.",
        "No subdural haematoma.",
        "No midline shift.",
        "The ventricles are not dilated.",
        "No Chiari malformation.",
        "The pituitary gland is normal.",
        "The hippocampi are normal; no mesial temporal sclerosis.",
        "No evidence of raised intracranial pressure.",
        "No meningeal enhancement.",
        "No cortical malformation.",
        "No blood products.",
        "No intracranial bleed.",
    ),
}

# Short denials for a conclusion, per label.
CONCLUSION_NEGATIONS: dict[str, tuple[str, ...]] = {
    "acute_stroke": ("No acute infarct.", "No evidence of acute stroke.", "No acute ischaemia.", "No recent infarct."),
    "mass": ("No mass lesion.", "No evidence of intracranial metastases.", "No tumour.", "No space-occupying lesion."),
    "atrophy": ("No atrophy.", "Brain volume normal for age.", "No disproportionate atrophy."),
    "vascular": ("No aneurysm or vascular malformation.", "No venous sinus thrombosis.", "No vascular abnormality."),
    "small_vessel_disease": ("No small vessel disease.", "No significant white matter disease."),
    "inflammation": ("No evidence of demyelination.", "No features of MS.", "No demyelinating lesions."),
    "encephalomalacia": ("No established infarct.", "No encephalomalacia.", "No old infarcts."),
    "abnormal": ("No haemorrhage.", "No hydrocephalus.", "No intracranial abnormality."),
}

# A finding is raised and then explained away; the label stays 0.
REFUTED: dict[str, tuple[str, ...]] = {
    "acute_stroke": (
        "Subtle high signal on DWI in the {side} {lobe} lobe is due to T2 shine-through, with no corresponding low ADC; no acute infarct.",
        "A focus of apparent diffusion restriction in the {side} temporal lobe is susceptibility artefact from the petrous bone and not an infarct.",
        "High DWI signal at the {side} frontal convexity has no ADC correlate and is artefactual.",
        "Possible restricted diffusion in the {side} {deep} on the initial sequence was not reproduced on the repeat DWI; no acute infarct.",
        "Questionable DWI hyperintensity in the {side} {lobe} cortex is not confirmed on the ADC map and is felt to be artefact.",
        "The area of FLAIR signal in the {side} {lobe} lobe raised on CT does not restrict diffusion; no acute ischaemia.",
        "Small focus of high DWI signal in the {side} {deep} is due to T2 shine-through, with normal ADC; no acute infarct.",
    ),
    "mass": (
        "A small focus of enhancement in the {side} {lobe} lobe on the post-contrast images is a normal cortical vein; no enhancing lesion.",
        "Mild asymmetry of the pituitary gland is within normal limits and no adenoma is identified.",
        "The apparent lesion in the {side} CPA on the T2 images is a vascular loop; no mass.",
        "The query lesion raised on the referring CT corresponds to a prominent venous structure; no mass is present.",
        "Apparent enhancement in the {side} internal auditory meatus is due to flow in a vascular loop; no vestibular schwannoma.",
        "The hyperdensity described on CT is a calcified dural plaque, not a meningioma.",
        "Heterogeneous signal in the pituitary is physiological; no discrete adenoma.",
    ),
    "atrophy": (
        "Apparent prominence of the {side} temporal horn is positional; the hippocampi are symmetrical and of normal volume.",
        "The sulci appear slightly prominent, but this is within the normal range for age and is not atrophy.",
        "Atrophy was queried on the referral, but brain volume is normal for age.",
        "Asymmetry of the temporal horns is developmental; the hippocampi are of normal volume with no atrophy.",
    ),
    "vascular": (
        "An apparent flow gap in the {side} transverse sinus on the MRV is due to sinus hypoplasia; no thrombosis.",
        "A small outpouching at the {side} PComm origin is an infundibulum rather than an aneurysm.",
        "Possible aneurysm at the {side} MCA bifurcation on the TOF source images is a vessel loop on the reformats; no aneurysm.",
        "A small focus of low signal on SWI in the {side} {lobe} lobe is a vein seen in cross-section, not a cavernoma.",
        "Apparent narrowing of the {side} MCA on the MIP images is due to flow artefact; no true stenosis.",
        "Signal in the {side} sigmoid sinus on T1 reflects slow flow; the MRV shows a patent sinus with no thrombus.",
    ),
    "small_vessel_disease": (
        "A few low-signal foci on SWI represent vessels seen in cross-section rather than microbleeds.",
        "Small T2 hyperintense foci in the basal ganglia follow CSF on all sequences and are perivascular spaces rather than lacunes.",
        "Questionable periventricular FLAIR hyperintensity is normal ependymitis granularis.",
        "The white matter foci queried on CT are not confirmed; the white matter is normal for age.",
    ),
    "inflammation": (
        "A single tiny focus of FLAIR hyperintensity in the {side} frontal white matter is non-specific and does not have the features of demyelination.",
        "Subtle FLAIR hyperintensity along the posterior horns is a normal finding (terminal zones of myelination), not demyelination.",
        "Apparent FLAIR signal in the pons is CSF pulsation artefact; no demyelinating plaque.",
        "Demyelination was considered clinically, but the white matter is normal with no lesions in typical locations.",
        "Two tiny non-specific subcortical white matter foci do not meet criteria for demyelination.",
    ),
    "encephalomalacia": (
        "Focal prominence of the {side} sylvian fissure is a normal variant; no encephalomalacia.",
        "An apparent cortical defect in the {side} {lobe} lobe is partial volume with a sulcus; no established infarct.",
        "The low attenuation described on CT in the {side} {lobe} lobe is not confirmed; no gliosis or old infarct.",
    ),
    "abnormal": (
        "Apparent high signal in the sulci on FLAIR is due to supplemental oxygen and not subarachnoid blood.",
        "Slightly prominent extra-axial CSF spaces over the frontal lobes are within normal limits; no subdural collection.",
        "The cerebellar tonsils are rounded and lie at the level of the foramen magnum; not a Chiari malformation.",
    ),
}

# The finding was present on a previous study and is gone now; label 0.
RESOLVED: dict[str, tuple[str, ...]] = {
    "acute_stroke": (
        "The previously seen small focus of restricted diffusion in the {side} {deep} has resolved without residual signal abnormality.",
    ),
    "mass": (
        "The previously noted ring-enhancing lesion in the {side} {lobe} lobe has resolved following treatment.",
        "Previously described enhancing metastasis in the {side} cerebellar hemisphere is no longer visible following radiosurgery.",
    ),
    "vascular": (
        "The previously seen thrombus in the {venous_sinus} has resolved, with recanalisation of the sinus.",
        "Interval resolution of the {side} vertebral artery dissection; the vessel is now of normal calibre.",
    ),
    "inflammation": (
        "The previously seen white matter lesions of ADEM have resolved.",
        "The lesion in the {side} thalamus seen on the prior study has resolved with no residual signal change.",
    ),
    "abnormal": (
        "The previously seen {side} subdural collection has resolved.",
        "Interval resolution of the subarachnoid blood.",
        "The ventricles have returned to normal size since shunt insertion and there is no longer hydrocephalus.",
    ),
}

# Clinical questions and history lines that name a label without confirming it.
QUESTIONS: dict[str, tuple[str, ...]] = {
    "acute_stroke": (
        "?stroke", "?CVA", "Query acute infarct", "?TIA", "Sudden onset {side} arm weakness ?stroke",
        "R/O CVA", "Suspected stroke", "TIA, ?embolic", "Acute {side}-sided weakness, ?posterior circulation stroke",
        "Rule out acute infarct", "Expressive dysphasia ?stroke", "Transient {side} facial droop. Exclude stroke",
        "Vertigo and ataxia, ?cerebellar infarct", "Stroke protocol", "Code stroke",
    ),
    "mass": (
        "?SOL", "?space occupying lesion", "?mets", "Known lung cancer, ?brain metastases", "Staging breast carcinoma",
        "Unilateral sensorineural hearing loss ?acoustic neuroma", "?vestibular schwannoma",
        "Raised prolactin ?pituitary adenoma", "?tumour", "Query intracranial tumour", "New seizures ?underlying lesion",
        "Headache, ?mass", "History of melanoma; ?metastatic disease", "Surveillance of previously treated meningioma",
        "Bitemporal hemianopia ?pituitary lesion", "R/O tumor",
    ),
    "atrophy": (
        "Memory loss ?dementia", "Cognitive impairment ?atrophy", "?Alzheimer's disease", "?FTD",
        "Cognitive decline, ?neurodegenerative process", "Progressive ataxia ?cerebellar atrophy", "?PSP",
        "Memory clinic referral", "Word-finding difficulty ?dementia",
    ),
    "vascular": (
        "?aneurysm", "Family history of aneurysm", "Thunderclap headache ?aneurysm", "?AVM",
        "?venous sinus thrombosis", "?CVST", "Neck pain and Horner's syndrome ?dissection", "?cavernoma",
        "Pulsatile tinnitus ?dAVF", "Screening for aneurysm, polycystic kidney disease",
    ),
    "small_vessel_disease": (
        "?small vessel disease", "?vascular dementia", "Vascular risk factors, cognitive decline",
        "Hypertension, ?SVD", "?microvascular disease",
    ),
    "inflammation": (
        "?MS", "?demyelination", "Known MS", "Optic neuritis ?MS", "Paraesthesia ?demyelination", "?CIS",
        "Known relapsing-remitting MS, on natalizumab", "Numbness in both legs, ?inflammatory", "Known MS, annual review",
        "?NMO", "Query demyelinating disease",
    ),
    "encephalomalacia": (
        "Previous stroke", "History of head injury in 2010", "Previous TBI", "Remote stroke",
        "Old head injury, ongoing headaches", "Previous {side} MCA stroke",
    ),
    "abnormal": (
        "?bleed", "?SAH", "?hydrocephalus", "?NPH", "Fall ?subdural", "Epilepsy ?structural cause", "?MTS",
        "?IIH", "?pituitary lesion", "?Chiari", "Headache, ?raised ICP", "?intracranial pathology",
    ),
}

GENERIC_REASONS: tuple[str, ...] = (
    "Headaches", "Chronic daily headache", "Dizziness", "Vertigo", "Seizure", "First fit", "Collapse", "Confusion",
    "Visual disturbance", "Tinnitus", "Numbness", "Ataxia", "Diplopia", "Facial pain", "Migraine with aura",
    "Follow-up", "Anosmia", "Behavioural change", "Tremor", "Worsening headaches", "Blackouts", "Syncope",
    "Left arm tingling", "Right facial numbness", "Blurred vision", "Fall", "Low mood and poor concentration",
    "Intermittent paraesthesia", "Hearing loss", "Unsteady gait", "Pre-operative planning",
    "Abnormal eye movements", "Papilloedema", "Chronic fatigue", "Speech disturbance",
)

HISTORY_EXTRAS: tuple[str, ...] = (
    "Hypertension.", "Type 2 diabetes.", "AF on apixaban.", "Smoker.", "No relevant past history.",
    "Previous breast cancer.", "On warfarin.", "Hypercholesterolaemia.", "Pacemaker - MR conditional.",
    "Claustrophobic.", "GP referral.", "Seen in neurology clinic.", "Referred from ED.", "Inpatient.",
)

# --- normal statements by region (filler; each denies something) -----------------------------

NORMAL_STATEMENTS: dict[str, tuple[str, ...]] = {
    "ventricles": (
        "The ventricles are normal in size and configuration.",
        "Ventricles and sulci are normal.",
        "The ventricular system is normal in calibre.",
        "Normal ventricular size.",
        "The ventricles are symmetrical and not dilated.",
        "Ventricles are of normal size and shape.",
        "No hydrocephalus.",
    ),
    "extra_axial": (
        "No extra-axial collection.",
        "No subdural or extradural collection.",
        "The extra-axial spaces are normal.",
        "The basal cisterns are patent.",
        "No extra-axial fluid collection.",
    ),
    "parenchyma": (
        "Normal grey-white matter differentiation.",
        "No focal parenchymal signal abnormality.",
        "The brain parenchyma is normal in signal and morphology.",
        "The cerebral hemispheres are normal.",
        "No mass effect or midline shift.",
        "The basal ganglia and thalami are normal.",
        "The corpus callosum is normal.",
        "No abnormal enhancement.",
        "Grey-white matter differentiation is preserved.",
        "No intra-axial lesion.",
        "No focal lesion is identified.",
        "The brain is structurally normal.",
    ),
    "white_matter": (
        "The white matter is normal.",
        "No white matter lesions.",
        "Normal white matter signal.",
        "No white matter signal abnormality.",
    ),
    "posterior_fossa": (
        "The posterior fossa structures are normal.",
        "The brainstem and cerebellum are normal.",
        "The cerebellar tonsils are normally positioned.",
        "The craniocervical junction is normal.",
        "Normal appearances of the posterior fossa.",
        "The fourth ventricle is midline and normal in size.",
    ),
    "sella": (
        "The pituitary gland is normal in size for age.",
        "The pituitary and parasellar structures are unremarkable.",
        "Normal pituitary gland, stalk and optic chiasm.",
        "The sella and suprasellar cistern are normal.",
    ),
    "vascular": (
        "Normal flow voids are present in the major intracranial vessels.",
        "The major intracranial flow voids are preserved.",
        "Normal arterial flow voids.",
        "The dural venous sinuses are patent.",
        "Expected vascular flow voids.",
        "Major vascular flow voids are maintained.",
    ),
    "dwi": (
        "No restricted diffusion.",
        "DWI is normal.",
        "No diffusion abnormality.",
        "Diffusion imaging is unremarkable.",
    ),
    "swi": (
        "No microhaemorrhage or blood products on SWI.",
        "No susceptibility artefact to suggest haemorrhage.",
        "SWI is unremarkable.",
        "No intracranial haemorrhage.",
    ),
    "orbits": (
        "The orbits are unremarkable.",
        "Visualised orbits are normal.",
        "The globes and optic nerves are normal.",
        "The imaged orbital contents are unremarkable.",
    ),
    "sinuses": (
        "The paranasal sinuses and mastoid air cells are clear.",
        "Visualised paranasal sinuses are well aerated.",
        "Clear mastoids.",
        "The paranasal sinuses are clear.",
        "Mastoid air cells are well pneumatised.",
    ),
    "skull": (
        "The calvarium and skull base are unremarkable.",
        "Normal marrow signal.",
        "The scalp soft tissues are normal.",
        "No calvarial lesion.",
        "Normal bone marrow signal in the skull vault.",
    ),
    "iam": (
        "The internal auditory meati and cerebellopontine angles are normal.",
        "Both seventh/eighth nerve complexes are normal.",
        "Normal appearances of the inner ear structures.",
    ),
    "hippocampi": (
        "The hippocampi are symmetrical and normal in size and signal.",
        "Normal hippocampal volume and signal bilaterally.",
    ),
}

# Sub-headings of a structured findings section, per region (US style templates).
SUBHEADINGS: dict[str, tuple[str, ...]] = {
    "parenchyma": ("Brain", "Brain parenchyma", "Parenchyma", "Supratentorial"),
    "white_matter": ("White matter",),
    "volume": ("Volume", "Brain volume"),
    "ventricles": ("Ventricles", "Ventricles/CSF spaces", "CSF spaces"),
    "extra_axial": ("Extra-axial", "Extra-axial spaces", "Meninges"),
    "posterior_fossa": ("Posterior fossa", "Infratentorial", "Brainstem/cerebellum"),
    "sella": ("Sella", "Pituitary"),
    "vascular": ("Vascular", "Vessels", "Flow voids"),
    "dwi": ("Diffusion", "DWI"),
    "swi": ("SWI", "Susceptibility"),
    "orbits": ("Orbits",),
    "sinuses": ("Sinuses/mastoids", "Paranasal sinuses", "Sinuses"),
    "skull": ("Skull and soft tissues", "Calvarium", "Bones"),
    "iam": ("IAMs", "Internal auditory canals"),
    "hippocampi": ("Hippocampi", "Mesial temporal lobes"),
    "general": ("Other", "Miscellaneous"),
}

REGION_ORDER: tuple[str, ...] = (
    "dwi", "parenchyma", "white_matter", "volume", "hippocampi", "ventricles", "extra_axial",
    "posterior_fossa", "iam", "sella", "vascular", "swi", "orbits", "sinuses", "skull", "general",
)

# --- report furniture --------------------------------------------------------------------------

TITLES: tuple[str, ...] = (
    "MRI HEAD", "MRI BRAIN", "MRI BRAIN WITHOUT CONTRAST", "MR Head", "MRI Brain and IAMs",
    "MRI BRAIN WITH AND WITHOUT CONTRAST", "MRI head (stroke protocol)", "MRI Head - Epilepsy protocol",
    "MR BRAIN W/O CONTRAST", "MRI Brain + MRA", "MRI HEAD WITH GADOLINIUM", "MR brain (dementia protocol)",
    "MRI BRAIN / PITUITARY", "MRI Head and MRV", "EXAM: MRI BRAIN", "MRI brain (MS protocol)",
)

TECHNIQUES: tuple[str, ...] = (
    "Sagittal T1, axial T2, FLAIR, DWI/ADC and SWI.",
    "Multiplanar multisequence MRI of the brain without contrast.",
    "Axial T2, coronal FLAIR, axial DWI, sagittal T1 MPRAGE.",
    "Multiplanar, multisequence MR imaging of the brain was performed before and after the intravenous administration of gadolinium.",
    "3T MRI brain including 3D FLAIR, DWI, SWI and post-contrast T1.",
    "Standard departmental epilepsy protocol.",
    "Routine brain sequences with 3D TOF MRA of the circle of Willis.",
    "Stroke protocol: DWI, FLAIR, SWI, TOF MRA.",
    "Pre and post gadolinium T1, T2, FLAIR, DWI.",
    "Axial T2, FLAIR, DWI and T1 sagittal; high-resolution T2 through the IAMs.",
    "Dedicated pituitary protocol with dynamic contrast.",
    "Non-contrast MRI head on 1.5T.",
    "Sequences: T1 sag, T2 ax, FLAIR ax/cor, DWI, SWI, post-gad T1 3D.",
    "Standard MS protocol including 3D FLAIR and post-contrast T1.",
    "MRI brain with MR venography.",
    "T2, FLAIR, DWI and coronal T1 volumetric imaging.",
    "Contrast: 7.5 mL gadobutrol IV. No immediate complications.",
)

COMPARISON_NONE: tuple[str, ...] = (
    "None.", "No previous imaging available.", "No prior imaging.", "None available.", "No comparison.",
    "No previous cross-sectional imaging.", "N/A.",
)

COMPARISON_PRIOR: tuple[str, ...] = (
    "MRI brain dated {date}.",
    "Previous MRI of {month} {year}.",
    "Prior MRI {year}.",
    "Compared with the MRI of {date}.",
    "CT head {date} and MRI {year}.",
    "MRI head {date} (outside hospital).",
)

PRIOR_REFERENCES: tuple[str, ...] = (
    "the previous study", "the prior MRI", "the MRI of {date}", "{month} {year}", "the last examination",
    "the previous examination", "prior imaging", "the comparison study",
)

COURSE_PHRASES: dict[str, tuple[str, ...]] = {
    "stable": (
        "This is unchanged compared with {prior}.", "Stable since {prior}.", "No change since {prior}.",
        "Appearances are unchanged from {prior}.", "This is stable.", "Unchanged.",
    ),
    "new": (
        "This is new since {prior}.", "New compared with {prior}.", "This was not present on {prior}.",
        "New since {prior}.",
    ),
    "larger": (
        "This has increased in size since {prior}.", "Increased compared with {prior}.",
        "Slightly larger than on {prior}.", "There has been interval progression since {prior}.",
    ),
    "smaller": (
        "This is smaller than on {prior}.", "Reduced in size compared with {prior}.",
        "There has been partial interval improvement since {prior}.", "Decreased since {prior}.",
    ),
}

COURSE_ADJECTIVES: dict[str, tuple[str, ...]] = {
    "stable": ("stable", "unchanged", "no change in"),
    "new": ("new", "interval development of", "new"),
    "larger": ("enlarging", "progressive", "increased"),
    "smaller": ("improving", "reducing", "partially resolved"),
}

# How a description is tied to its diagnosis in the findings section.
LINKERS: tuple[str, ...] = (
    "Appearances are in keeping with {dx}.",
    "This is consistent with {dx}.",
    "Findings are compatible with {dx}.",
    "In keeping with {dx}.",
    "Consistent with {dx}.",
    "This represents {dx}.",
    "Appearances are typical of {dx}.",
    "Features are those of {dx}.",
)

INLINE_LINKERS: tuple[str, ...] = (
    ", in keeping with {dx}.", ", consistent with {dx}.", ", compatible with {dx}.", " - {dx}.",
    ", representing {dx}.", ", c/w {dx}.", ", typical of {dx}.",
)

# Uncertain but raised: positive per the label policy.
HEDGED_LINKERS: tuple[str, ...] = (
    "Appearances are suggestive of {dx}.",
    "This likely represents {dx}.",
    "Most likely {dx}.",
    "{Dx} cannot be excluded.",
    "Cannot exclude {dx}.",
    "Possible {dx}.",
    "Query {dx}.",
    "Probably {dx}.",
    "The differential diagnosis includes {dx}.",
    "Features raise the possibility of {dx}.",
    "This could represent {dx}.",
    "Suspicious for {dx}.",
    "Favour {dx}.",
    "Likely {dx}.",
    "?{dx}.",
)

INLINE_HEDGES: tuple[str, ...] = (
    ", likely {dx}.", ", possibly {dx}.", ", ?{dx}.", ", suspicious for {dx}.", ", query {dx}.",
    ", suggestive of {dx}.", ", probably {dx}.", " - ?{dx}.",
)

CONCLUSION_HEDGES: tuple[str, ...] = (
    "Likely {dx}.", "Possible {dx}.", "Probable {dx}.", "Suspected {dx}.", "Appearances suggest {dx}.",
    "{Dx} is the most likely diagnosis.", "{Dx} cannot be excluded.", "?{dx}.", "Query {dx}.",
    "Findings are suspicious for {dx}.", "Favour {dx}.",
)

DX_SENTENCES: tuple[str, ...] = (
    "There is {dx}.", "{Dx}.", "Features of {dx}.", "{Dx} is noted.", "Evidence of {dx}.", "{Dx} is present.",
)

NORMAL_CONCLUSIONS: tuple[str, ...] = (
    "Normal MRI brain.", "Normal study.", "No intracranial abnormality.", "Unremarkable MRI of the brain.",
    "No significant intracranial abnormality.", "No structural abnormality to account for the symptoms.",
    "No cause for the patient's symptoms identified.", "Normal appearances of the brain.",
    "Normal MRI head.", "No abnormality detected.", "Normal examination.", "Normal intracranial appearances.",
    "No significant abnormality.", "Essentially normal MRI brain.", "No acute or chronic intracranial abnormality.",
    "Within normal limits.", "No intracranial pathology demonstrated.", "NAD.",
)

NORMAL_FOR_AGE_CONCLUSIONS: tuple[str, ...] = (
    "No significant abnormality for age.", "Age-related changes only.", "Normal for age.",
    "No abnormality beyond age-related change.", "Age-appropriate appearances.",
    "Normal MRI brain for the patient's age.",
)

NO_ACUTE_CONCLUSIONS: tuple[str, ...] = (
    "No acute intracranial abnormality.", "No acute intracranial pathology.", "No acute findings.",
    "No acute abnormality.",
)

# A conclusion that refers back instead of naming the findings: the description must carry the labels.
AS_ABOVE: tuple[str, ...] = (
    "Findings as described above.", "As above.", "See findings above.", "Abnormal study, as detailed above.",
    "Appearances as described.",
)

OTHERWISE_NORMAL: tuple[str, ...] = (
    "Otherwise normal.", "No other abnormality.", "Otherwise unremarkable.", "No other significant finding.",
    "The remainder of the study is normal.", "Otherwise normal appearances.",
)

RECOMMENDATIONS: tuple[str, ...] = (
    "Suggest clinical correlation.", "Recommend follow-up MRI in 6 months.",
    "Findings discussed with the referring team by telephone.", "Follow-up imaging in 12 months is suggested.",
    "Recommend contrast-enhanced study.", "Clinical correlation is advised.",
)

SIGNOFFS: tuple[str, ...] = (
    "Reported by Dr {name}, Consultant Neuroradiologist.", "Dr {name}", "Electronically signed by {name}, MD.",
    "Dictated by Dr {name}.", "{name}, Consultant Radiologist", "Verified by Dr {name} on {date}.",
    "Reporting radiologist: Dr {name}.",
)

SURNAMES: tuple[str, ...] = (
    "Smith", "Patel", "Okafor", "Nguyen", "Williams", "Chen", "Kowalski", "Murphy", "Garcia", "Khan", "Jones",
    "Schmidt", "Ahmed", "Taylor", "Rossi", "Brown", "O'Neill", "Singh", "Evans", "Fischer",
)

HEADINGS: dict[str, tuple[str, ...]] = {
    "clinical": (
        "Clinical details", "Clinical information", "History", "Indication", "Clinical indication",
        "Clinical history", "Reason for exam", "Clinical question", "CLINICAL DETAILS", "HISTORY", "INDICATION",
        "Clinical Hx", "Referral details",
    ),
    "technique": ("Technique", "Sequences", "Protocol", "TECHNIQUE", "Procedure", "Method"),
    "comparison": ("Comparison", "Previous imaging", "Prior studies", "COMPARISON", "Compared with", "Prior"),
    "findings": ("Findings", "Report", "FINDINGS", "Description", "Observations"),
    "conclusion": (
        "Conclusion", "Impression", "Opinion", "Summary", "IMPRESSION", "CONCLUSION", "Comment", "Interpretation",
        "OPINION", "Diagnosis", "Conclusions",
    ),
}

MONTHS: tuple[str, ...] = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
    "November", "December",
)

# --- generic negation and question wording over per-label terms -------------------------------

# Noun phrases naming what a label means, for "No {t}." and list negations ("No {a}, {b} or {c}.").
NEGATABLE_TERMS: dict[str, tuple[str, ...]] = {
    "acute_stroke": (
        "acute infarct", "acute infarction", "acute ischaemia", "acute stroke", "recent infarct",
        "acute ischaemic stroke", "restricted diffusion", "diffusion restriction", "acute territorial infarct",
        "acute lacunar infarct", "acute ischaemic change", "recent ischaemic event", "acute cortical infarct",
    ),
    "mass": (
        "mass lesion", "space-occupying lesion", "intracranial mass", "tumour", "neoplasm", "metastases",
        "metastatic disease", "enhancing lesion", "vestibular schwannoma", "SOL", "focal mass", "intracranial neoplasm",
        "intra-axial or extra-axial mass", "cerebellopontine angle mass", "pituitary macroadenoma",
        "residual or recurrent tumour", "suspicious enhancing lesion", "intracranial metastases",
    ),
    "atrophy": (
        "atrophy", "cerebral atrophy", "volume loss", "hippocampal atrophy", "focal atrophy", "disproportionate atrophy",
        "cerebellar atrophy", "generalised volume loss", "lobar atrophy", "mesial temporal atrophy",
        "parenchymal volume loss",
    ),
    "vascular": (
        "aneurysm", "vascular malformation", "AVM", "arteriovenous malformation", "cavernoma",
        "venous sinus thrombosis", "dural venous sinus thrombosis", "arterial dissection", "dissection",
        "significant stenosis", "large vessel occlusion", "dural AV fistula", "intracranial aneurysm",
        "flow-limiting stenosis", "cavernous malformation", "vascular abnormality",
    ),
    "small_vessel_disease": (
        "small vessel disease", "white matter hyperintensities", "small vessel ischaemic change",
        "microvascular ischaemic change", "lacunes", "microbleeds", "microhaemorrhages", "white matter disease",
        "leukoaraiosis", "SVD", "WMH", "chronic small vessel change", "significant white matter change",
    ),
    "inflammation": (
        "demyelination", "demyelinating lesions", "MS plaques", "features of MS", "lesions typical of multiple sclerosis",
        "inflammatory white matter lesions", "active demyelination", "demyelinating disease",
        "enhancing demyelinating lesions", "white matter inflammation", "features of demyelination",
        "lesions suggestive of demyelination",
    ),
    "encephalomalacia": (
        "encephalomalacia", "gliosis", "established infarct", "old infarct", "chronic infarct", "previous infarction",
        "post-traumatic change", "old contusion", "established cortical infarct", "focal tissue loss",
        "post-ischaemic gliosis",
    ),
    "abnormal": (
        "intracranial haemorrhage", "haemorrhage", "hydrocephalus", "extra-axial collection", "subdural collection",
        "midline shift", "mass effect", "Chiari malformation", "abnormal enhancement", "meningeal enhancement",
        "intracranial abnormality", "structural abnormality", "blood products", "herniation",
        "subarachnoid haemorrhage", "cortical malformation", "hippocampal sclerosis",
    ),
}

NEGATION_TEMPLATES: tuple[str, ...] = (
    "No {t}.", "No evidence of {t}.", "There is no {t}.", "No {t} is seen.", "No {t} identified.", "{T} is not seen.",
    "Negative for {t}.", "{T}: none.", "There is no evidence of {t}.", "Nothing to suggest {t}.", "No features of {t}.",
    "{T} excluded.", "{T} is excluded.", "No convincing {t}.", "No MRI evidence of {t}.", "No sign of {t}.",
    "{T} is not demonstrated.", "{T} not identified.", "No definite {t}.", "No {t} demonstrated.", "Absence of {t}.",
    "No imaging features of {t}.", "There are no signs of {t}.", "{T} has been excluded.", "No {t} detected.",
    "No discernible {t}.", "No appreciable {t}.", "No {t} on this study.", "No {t} present.", "{T} - none.",
    "No evidence for {t}.", "{T} is absent.", "Specifically, no {t}.", "In particular, no {t}.",
    "No {t} is identified on this examination.", "There is no MRI evidence of {t}.", "{T}: not seen.",
)

LIST_NEGATION_TEMPLATES: tuple[str, ...] = (
    "No {a}, {b} or {c}.", "No {a} or {b}.", "No evidence of {a}, {b} or {c}.", "There is no {a} or {b}.",
    "No {a}/{b}.", "Specifically, no {a} or {b}.", "Neither {a} nor {b} is seen.", "No {a}, no {b}.",
    "No {a}, {b}, or {c}.", "There is no evidence of {a} or {b}.", "No {a} and no {b}.", "No {a}, {b} or {c} is seen.",
    "Negative for {a} and {b}.", "{A} and {b} are not seen.",
)

QUESTION_TERMS: dict[str, tuple[str, ...]] = {
    "acute_stroke": ("stroke", "CVA", "TIA", "acute infarct", "posterior circulation stroke", "ischaemic event",
                     "acute ischaemia", "lacunar stroke"),
    "mass": ("SOL", "space occupying lesion", "tumour", "mets", "metastases", "brain tumour", "vestibular schwannoma",
             "acoustic neuroma", "pituitary adenoma", "meningioma", "glioma", "lymphoma", "intracranial mass"),
    "atrophy": ("dementia", "atrophy", "Alzheimer's", "FTD", "neurodegeneration", "volume loss",
                "neurodegenerative disease"),
    "vascular": ("aneurysm", "AVM", "dissection", "venous sinus thrombosis", "CVST", "cavernoma",
                 "vascular malformation", "dAVF", "moyamoya", "vertebral dissection"),
    "small_vessel_disease": ("small vessel disease", "vascular dementia", "SVD", "microvascular disease",
                             "white matter disease", "vascular cognitive impairment"),
    "inflammation": ("MS", "demyelination", "CIS", "NMO", "ADEM", "inflammatory process", "CNS vasculitis",
                     "multiple sclerosis", "demyelinating disease"),
    "encephalomalacia": ("old infarct", "sequelae of previous head injury", "post-traumatic change", "old stroke"),
    "abnormal": ("bleed", "haemorrhage", "hydrocephalus", "NPH", "subdural", "SAH", "IIH", "raised ICP", "Chiari",
                 "structural lesion", "MTS", "cortical dysplasia", "epileptogenic focus", "intracranial pathology"),
}

QUESTION_TEMPLATES: tuple[str, ...] = (
    "?{t}", "? {t}", "Query {t}", "Q {t}", "R/O {t}", "Rule out {t}", "Exclude {t}", "To exclude {t}",
    "Assess for {t}", "Evaluate for {t}", "Concern for {t}", "Suspected {t}", "{T}?", "Look for {t}",
    "Possible {t}", "Ix for {t}", "Please exclude {t}", "Any {t}?", "Clinical suspicion of {t}", "?? {t}",
    "Exclude underlying {t}", "Clinically {t}",
)

KNOWN_TEMPLATES: tuple[str, ...] = (
    "Known {t}", "Background of {t}", "PMH: {t}", "Hx of {t}", "History of {t}", "Previously diagnosed {t}",
)

KNOWN_TERMS: dict[str, tuple[str, ...]] = {
    "acute_stroke": ("stroke", "TIA"),
    "mass": ("metastatic lung cancer", "meningioma, for surveillance", "treated glioma", "breast cancer"),
    "atrophy": ("Alzheimer's disease", "dementia", "Parkinson's disease"),
    "vascular": ("aneurysm, coiled", "AVM", "cavernoma"),
    "small_vessel_disease": ("small vessel disease", "hypertension"),
    "inflammation": ("MS", "relapsing-remitting MS", "multiple sclerosis", "NMOSD"),
    "encephalomalacia": ("head injury", "stroke", "craniotomy"),
    "abnormal": ("epilepsy", "VP shunt", "migraine"),
}

# More ways to raise a diagnosis without committing to it (positive under the policy).
MORE_HEDGES: tuple[str, ...] = (
    "Concerning for {dx}.", "Worrisome for {dx}.", "May represent {dx}.", "Raises concern for {dx}.",
    "{Dx} is not excluded.", "{Dx} is a possibility.", "Equivocal for {dx}.", "Differential considerations include {dx}.",
    "Consider {dx}.", "Appearances could be due to {dx}.", "{Dx} is suspected.", "{Dx} is favoured.",
    "{Dx} is likely.", "? {dx}.", "Possibly {dx}.", "Presumed {dx}.", "Suspected {dx}.",
)

QUALITY_STATEMENTS: tuple[str, ...] = (
    "The study is mildly degraded by patient motion.", "Limited examination due to patient movement.",
    "Post-contrast imaging was not performed.", "Good quality study.", "Some motion artefact on the FLAIR sequence.",
    "The patient could not tolerate the full protocol; an abbreviated study was obtained.",
    "Images are of diagnostic quality.", "Examination performed under general anaesthetic.",
    "Mild motion artefact limits assessment of the posterior fossa.",
)

RECOMMENDATIONS_BY_LABEL: dict[str, tuple[str, ...]] = {
    "acute_stroke": ("Findings discussed with the stroke team.", "Urgent findings communicated to the on-call stroke "
                     "physician.", "Recommend carotid imaging."),
    "mass": ("Suggest discussion at the neuro-oncology MDT.", "Suggest neurosurgical referral.",
             "Recommend staging CT of the chest, abdomen and pelvis.", "Follow-up MRI in 6 months is suggested."),
    "vascular": ("Suggest discussion at the neurovascular MDT.", "Recommend catheter angiography.",
                 "Follow-up MRA in 12 months."),
    "inflammation": ("Referral to the neurology team is advised.", "Recommend correlation with CSF analysis.",
                     "Suggest spinal cord imaging."),
    "atrophy": ("Suggest correlation with neuropsychological assessment.", "Memory clinic follow-up."),
    "small_vessel_disease": ("Recommend optimisation of vascular risk factors.",),
    "encephalomalacia": ("No further imaging required.",),
    "abnormal": ("Suggest clinical correlation.", "Findings discussed with the referring team by telephone.",
                 "Recommend neurosurgical opinion."),
}

PAEDIATRIC_STATEMENTS: tuple[str, ...] = (
    "Myelination is appropriate for age.", "Normal myelination for age.", "Age-appropriate myelination.",
)

# Meaning-preserving paraphrases applied to finished text: (regex, alternatives). Hedge words are only
# swapped with hedge words, certain wording with certain wording, negations with negations.
SYNONYMS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (r"\bhyperintensity\b", ("hyperintensity", "high signal", "hyperintense signal", "signal hyperintensity",
                             "increased signal")),
    (r"\bhyperintensities\b", ("hyperintensities", "foci of high signal", "hyperintense foci", "high signal foci")),
    (r"\brestricted diffusion\b", ("restricted diffusion", "diffusion restriction", "reduced diffusivity",
                                   "restricted diffusion (low ADC)", "true diffusion restriction")),
    (r"\b(?:in keeping with|consistent with|compatible with)\b", ("in keeping with", "consistent with",
                                                                    "compatible with", "typical of", "in keeping with")),
    (r"\bmeasuring\b", ("measuring", "measuring approximately", "of approximately", "measuring up to")),
    (r"\bidentified\b", ("identified", "seen", "demonstrated", "detected", "noted")),
    (r"\bsuggestive of\b", ("suggestive of", "suspicious for", "concerning for", "raising the possibility of")),
    (r"\bmultiple\b(?! sclerosis)", ("multiple", "numerous", "several", "many", "a number of")),
    (r"\bextensive\b", ("extensive", "widespread", "marked")),
    (r"\bAppearances are\b", ("Appearances are", "The findings are", "Features are", "Imaging appearances are")),
    (r"\bNo evidence of\b", ("No evidence of", "No MRI evidence of", "No imaging evidence of", "No sign of",
                             "No features of", "There is no evidence of")),
    (r"\bunremarkable\b", ("unremarkable", "normal", "within normal limits")),
    (r"\bsignal abnormality\b", ("signal abnormality", "signal change", "abnormal signal")),
    (r"\bT2/FLAIR\b", ("T2/FLAIR", "T2 and FLAIR", "T2-weighted and FLAIR", "FLAIR", "T2W/FLAIR")),
    (r"\bcompared with\b", ("compared with", "compared to", "relative to", "in comparison with")),
    (r"\bprevious\b", ("previous", "prior")),
    (r"\bexamination\b", ("examination", "study", "exam", "scan")),
    (r"\bchronic small vessel ischaemic change\b", ("chronic small vessel ischaemic change",
                                                    "chronic small vessel ischaemia",
                                                    "chronic microvascular ischaemic change",
                                                    "small vessel ischaemic change", "chronic small vessel disease")),
    (r"\bgeneralised\b", ("generalised", "global", "diffuse")),
    (r"\binfarct\b(?!ion)", ("infarct", "infarct", "infarction")),
    (r"\bThere is (?=an? (?:area|region|focus|lesion)\b)", ("There is ", "Demonstrated is ", "Noted is ",
                                                              "We note ", "Seen is ")),
    (r"\bsurrounding\b", ("surrounding", "adjacent", "perilesional")),
    (r"\bvasogenic oedema\b", ("vasogenic oedema", "oedema", "white matter oedema")),
    (r"\bwithin normal limits\b", ("within normal limits", "normal", "WNL")),
    (r"\bis noted\b", ("is noted", "is seen", "is present", "is demonstrated")),
    (r"\bin size\b", ("in size", "in dimension")),
)
