"""Which attributes the instance's IOD requires, and what compound action codes then become.

PS3.15 E.1.1: "It is the responsibility of the de-identifier to ensure that this process does
not negatively affect the integrity of the Information Object Definition, i.e., Dummy values may
be necessary for Type 1 Attributes"; each protected attribute "shall then either be removed from
the Data Set, or have its value replaced by a different replacement value that does not allow
identification".  Table E.1-1a's compound codes name the choice (X/Z: Type 3 vs 2, X/D: 3 vs 1,
X/Z/D: 3 vs 2 vs 1, Z/D: 2 vs 1).  So an attribute present in the input that a module of its IOD
requires is replaced, not removed (:func:`resolve`):

* required Type 1 or 1C: D, a dummy (:func:`dicomgate.deid._values.dummy_value`) — also for
  X/Z, whose Z allows "a non-zero length value that may be a dummy";
* required Type 2 or 2C: Z, an empty value (the least that keeps the instance valid), except
  under X/D, which allows no Z: D;
* not required where it stands: the first alternative (X; Z for Z).
* **X alone** (e.g. Responsible Person, Responsible Organization, Type 2C in the veterinary
  Patient Module, C.7.1.1): treated as above.  E.1.1 allows replacement as a form of protection
  and makes IOD integrity the de-identifier's job; the table's X says the *value* must not
  survive, and an empty (Type 2) or dummy (Type 1) value carries none of it.
* **Z/D**: D when the received value is non-empty, Z when it is empty (a Type 1 attribute is never
  empty in a conformant instance); no IOD knowledge needed.
* **X/Z/U\\*** (Referenced/Source Image Sequence): U — the sequence is kept and its items walked,
  which replaces every UID in them (required in derived and enhanced images, C.7.6.1.1.4).

Conditions of 1C/2C attributes (e.g. "required if the patient is an animal", "if Image Type
Value 1 is ORIGINAL") are not evaluated: an attribute the sender included is kept present
(replaced) whenever its IOD has a module that may require it.  That costs nothing in privacy —
its value is gone either way — and never makes an instance less conformant than removal would.

The requirement data below are extracted from PS3.3 (as tabulated by highdicom 0.28.2's
``_standard`` tables, generated from the standard by innolitics/dicom-standard; regenerate with
``tools/gen_iod_extract.py``), keeping only
what changes an action: attributes whose Basic Profile code removes (X, X/Z, X/D, X/Z/D) or
empties (Z) them, with Type 1/1C/2/2C (Z: 1/1C only), and only where every enclosing sequence can
be walked (its own code is not X under every option).

* ``_MODULES``: top-level requirements by module; ``_IODS``: the modules of each IOD that hold
  one.  The Patient and Patient Study Modules (``_EVERY_IOD``) are in every composite IOD.
* ``_NESTED``: requirements inside sequence items, by (enclosing sequence, attribute) — the same
  macro wherever that sequence is used, so independent of the IOD.  The multi-frame functional
  group macros are walked like any other sequence.
* The IOD of a SOP class is its PS3.4 name slugged (``Enhanced MR Image Storage`` →
  ``enhanced-mr-image``), or ``_SOP_CLASS_IOD`` where the names differ.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from types import MappingProxyType

from pydicom._uid_dict import UID_dictionary  # PS3.6 Annex A registry (behind UID.name)
from pydicom.dataset import Dataset

__all__ = [
    "MAYBE_REQUIRED",
    "NESTED",
    "REQUIRED",
    "Required",
    "required_at_top",
    "requirements",
    "resolve",
]

Required = str
"""``"1"`` (present with a value: Type 1/1C) or ``"2"`` (present, may be empty: Type 2/2C)."""

_EVERY_IOD = ("patient", "patient-study")

# fmt: off
_NESTED = """
AcquisitionDeviceSequence/DeviceSerialNumber=2 ApprovalSequence/InstitutionCodeSequence=1
AsserterIdentificationSequence/InstitutionCodeSequence=2
AsserterIdentificationSequence/InstitutionName=2 AsserterIdentificationSequence/StationName=2
AssessmentRequesterSequence/InstitutionCodeSequence=2
AssessmentRequesterSequence/InstitutionName=2 AssessmentRequesterSequence/StationName=2
AuthorIdentificationSequence/InstitutionCodeSequence=2
AuthorIdentificationSequence/InstitutionName=2 AuthorIdentificationSequence/StationName=2
BeamHoldOriginatingDeviceSequence/DeviceSerialNumber=2 BeamSequence/TreatmentMachineName=2
BlockDefinitionSequence/DeviceSerialNumber=2 BolusDefinitionSequence/DeviceSerialNumber=2
CompensatorDefinitionSequence/DeviceSerialNumber=2 ContentSequence/ObservationDateTime=1
ContributingSourcesSequence/AcquisitionDateTime=1
ContributingSourcesSequence/AcquisitionDeviceProcessingDescription=1
ContributingSourcesSequence/DateOfLastDetectorCalibration=1
ContributingSourcesSequence/DetectorID=1 ContributingSourcesSequence/DeviceSerialNumber=1
ContributingSourcesSequence/OperatorIdentificationSequence=1
ContributingSourcesSequence/OperatorsName=1 ContributingSourcesSequence/ProtocolName=1
ContributingSourcesSequence/StationName=1
ContributingSourcesSequence/TimeOfLastDetectorCalibration=1
DICOMRetrievalSequence/RetrieveAETitle=1
EnhancedRTBeamLimitingDeviceSequence/DeviceSerialNumber=2
EquipmentAdministratorSequence/InstitutionCodeSequence=1
EquipmentAdministratorSequence/InstitutionName=1 FractionStatusSummarySequence/TreatmentDate=2
FractionStatusSummarySequence/TreatmentTime=2
GeneralAccessoryDefinitionSequence/DeviceSerialNumber=2
HangingProtocolDefinitionSequence/ReasonForRequestedProcedureCodeSequence=2
IntendedRTTreatmentPhaseSequence/IntendedPhaseEndDate=2
IntendedRTTreatmentPhaseSequence/IntendedPhaseStartDate=2
InterlockOriginatingDeviceSequence/DeviceSerialNumber=2
InterlockResolutionUserSequence/InstitutionCodeSequence=1
InterlockResolutionUserSequence/InstitutionName=1 InventoriedStudiesSequence/RetrieveAETitle=1
InventoriedStudiesSequence/StudyDescription=2 IonBeamSequence/TreatmentMachineName=2
OperatorIdentificationSequence/InstitutionCodeSequence=1
OperatorIdentificationSequence/InstitutionName=1 OperatorIdentificationSequence/StationName=2
OverrideSequence/OperatorIdentificationSequence=1 OverrideSequence/OperatorsName=2
PatientSupportDevicesSequence/DeviceSerialNumber=2
PatientTreatmentPreparationDeviceSequence/DeviceSerialNumber=2
PatientTreatmentPreparationProcedureSequence/PatientTreatmentPreparationProcedureParameterDescription=2
PlanOverviewSequence/TreatmentSite=2
PlanningInputInformationSequence/ReferencedStudySequence=1
PositionAcquisitionTemplateIdentificationSequence/PositionAcquisitionTemplateDescription=2
PositionAcquisitionTemplateIdentificationSequence/PositionAcquisitionTemplateName=1
RTAccessoryHolderDefinitionSequence/DeviceSerialNumber=2
RTAccessoryHolderSlotSequence/RTAccessoryHolderSlotID=1
RTBeamLimitingDeviceDefinitionSequence/DeviceSerialNumber=2
RTPhysicianIntentInputInstanceSequence/ReferencedStudySequence=1
RTPhysicianIntentSequence/RTTreatmentApproachLabel=2 RTPhysicianIntentSequence/TreatmentSite=1
RTPrescriptionSequence/PriorTreatmentDoseDescription=2
RTROIObservationsSequence/ROIInterpreterSequence=1
RadiopharmaceuticalInformationSequence/RadiopharmaceuticalStartDateTime=1
RecordedSourceSequence/SourceManufacturer=2 RecordedSourceSequence/SourceSerialNumber=2
ReferencedPatientSetupPhotoSequence/PatientSetupPhotoDescription=2
ReferencedPositionReferenceInstanceSequence/ReferencedStudySequence=1
ReferencedRequestSequence/ReferencedStudySequence=2
ReferencedRequestSequence/RequestedProcedureDescription=2
ReferencedRequestSequence/RequestedProcedureID=2
RequestAttributesSequence/RequestedProcedureID=1
RequestAttributesSequence/ScheduledProcedureStepID=1
RequestingPhysicianIdentificationSequence/InstitutionCodeSequence=1
RequestingPhysicianIdentificationSequence/InstitutionName=1
ScopeOfInventorySequence/TimezoneOffsetFromUTC=1
SegmentedRTAccessoryDeviceSequence/DeviceSerialNumber=2
SourceSeriesInformationSequence/SeriesDate=1
SourceSeriesInformationSequence/SeriesDescription=1
SourceSeriesInformationSequence/SeriesTime=1
TransducerIdentificationSequence/DeviceSerialNumber=2
TreatmentDeviceIdentificationSequence/DeviceSerialNumber=2
TreatmentMachineSequence/DeviceSerialNumber=2 TreatmentMachineSequence/InstitutionName=2
TreatmentMachineSequence/TreatmentMachineName=2 UDISequence/UniqueDeviceIdentifier=1
WedgeDefinitionSequence/DeviceSerialNumber=2
XRay3DAcquisitionSequence/EndAcquisitionDateTime=1
XRay3DAcquisitionSequence/StartAcquisitionDateTime=1 XRayFilterSequence/DeviceSerialNumber=2
"""
_MODULES = """
acquisition-context: AcquisitionContextSequence=2
approval: ReviewerName=2
autorefraction-measurements-series: ReferencedPerformedProcedureStepSequence=1
corneal-topography-map-image: AcquisitionDateTime=1
corneal-topography-map-series: ReferencedPerformedProcedureStepSequence=1
ct-series: ReferencedPerformedProcedureStepSequence=1
dx-series: ReferencedPerformedProcedureStepSequence=1
encapsulated-document: AcquisitionDateTime=2
enhanced-ct-image: AcquisitionDateTime=1
enhanced-general-equipment: DeviceSerialNumber=1
enhanced-mammography-image: AcquisitionDateTime=1
enhanced-mammography-series: ReferencedPerformedProcedureStepSequence=1
enhanced-mr-image: AcquisitionDateTime=1
enhanced-pet-image: AcquisitionDateTime=1
enhanced-pet-series: ReferencedPerformedProcedureStepSequence=1
enhanced-rt-series: ReferencedPerformedProcedureStepSequence=1 SeriesDate=1 SeriesTime=1
enhanced-series: ReferencedPerformedProcedureStepSequence=1
enhanced-us-image: AcquisitionDateTime=1
enhanced-us-series: ReferencedPerformedProcedureStepSequence=1
enhanced-xa-xrf-image: AcquisitionDateTime=1
intraocular-lens-calculations-series: ReferencedPerformedProcedureStepSequence=1
intravascular-oct-image: AcquisitionDateTime=1
intravascular-oct-series: ReferencedPerformedProcedureStepSequence=1
keratometry-measurements-series: ReferencedPerformedProcedureStepSequence=1
key-object-document-series: ReferencedPerformedProcedureStepSequence=2
lensometry-measurements-series: ReferencedPerformedProcedureStepSequence=1
microscopy-bulk-simple-annotations-series: ReferencedPerformedProcedureStepSequence=1
mr-series: ReferencedPerformedProcedureStepSequence=1
mr-spectroscopy: AcquisitionDateTime=1
ophthalmic-axial-measurements-series: ReferencedPerformedProcedureStepSequence=1
ophthalmic-photography-image: AcquisitionDateTime=1
ophthalmic-thickness-map: AcquisitionDateTime=1
ophthalmic-thickness-map-series: ReferencedPerformedProcedureStepSequence=1
ophthalmic-tomography-b-scan-volume-analysis-series: ReferencedPerformedProcedureStepSequence=1
ophthalmic-tomography-en-face-series: ReferencedPerformedProcedureStepSequence=1
ophthalmic-tomography-image: AcquisitionDateTime=1
ophthalmic-tomography-series: ReferencedPerformedProcedureStepSequence=1
optical-surface-scanner-series: ReferencedPerformedProcedureStepSequence=1
parametric-map-series: ReferencedPerformedProcedureStepSequence=1
patient: ResponsibleOrganization=2 ResponsiblePerson=2
patient-study: PatientSexNeutered=2
pet-image: AcquisitionDate=2 AcquisitionTime=2
pet-series: SeriesDate=1 SeriesTime=1
photoacoustic-image: AcquisitionDateTime=1
presentation-state-identification: PresentationCreationDate=1 PresentationCreationTime=1
protocol-context: InstanceCreationDate=1 InstanceCreationTime=1 ProtocolName=1
radiotherapy-common-instance: InstanceCreationDate=1 InstanceCreationTime=1
rt-general-plan: RTPlanDate=2 RTPlanTime=2
rt-general-treatment-record: TreatmentDate=2 TreatmentTime=2
rt-series: OperatorsName=2
rt-treatment-summary-record: FirstTreatmentDate=2 MostRecentTreatmentDate=2
scan-procedure: AcquisitionDateTime=1
segmentation-series: ReferencedPerformedProcedureStepSequence=1
sr-document-content: ObservationDateTime=1
sr-document-series: ReferencedPerformedProcedureStepSequence=2
structured-display: PresentationCreationDate=1 PresentationCreationTime=1
subjective-refraction-measurements-series: ReferencedPerformedProcedureStepSequence=1
timezone: TimezoneOffsetFromUTC=1
tractography-results-series: ReferencedPerformedProcedureStepSequence=1
us-image: AcquisitionDateTime=1
visual-acuity-measurements-series: ReferencedPerformedProcedureStepSequence=1
visual-field-static-perimetry-measurements-series: ReferencedPerformedProcedureStepSequence=1
volumetric-presentation-state-identification: PresentationCreationDate=1 PresentationCreationTime=1
waveform-identification: AcquisitionDateTime=1
whole-slide-microscopy-image: AcquisitionDateTime=1
whole-slide-microscopy-series: ReferencedPerformedProcedureStepSequence=1
xa-xrf-series: ReferencedPerformedProcedureStepSequence=1
"""
_IODS = """
12-lead-ecg: waveform-identification acquisition-context
acquisition-context-sr: sr-document-series enhanced-general-equipment sr-document-content
advanced-blending-presentation-state: enhanced-general-equipment
    presentation-state-identification
ambulatory-ecg: waveform-identification acquisition-context
arterial-pulse-waveform: enhanced-general-equipment waveform-identification acquisition-context
autorefraction-measurements: autorefraction-measurements-series enhanced-general-equipment
basic-cardiac-electrophysiology-waveform: waveform-identification acquisition-context
basic-structured-display: enhanced-general-equipment structured-display
basic-text-sr: sr-document-series sr-document-content
basic-voice-audio-waveform: waveform-identification acquisition-context
blending-softcopy-presentation-state: presentation-state-identification
body-position-waveform: enhanced-general-equipment waveform-identification acquisition-context
breast-projection-x-ray-image: dx-series enhanced-mammography-series enhanced-general-equipment
    enhanced-mammography-image acquisition-context
breast-tomosynthesis-image: enhanced-mammography-series enhanced-general-equipment
    acquisition-context
c-arm-photon-electron-radiation: enhanced-rt-series enhanced-general-equipment
    radiotherapy-common-instance
c-arm-photon-electron-radiation-record: enhanced-rt-series enhanced-general-equipment
    radiotherapy-common-instance
chest-cad-sr: sr-document-series sr-document-content
colon-cad-sr: sr-document-series enhanced-general-equipment sr-document-content
color-softcopy-presentation-state: presentation-state-identification
comprehensive-3d-sr: sr-document-series sr-document-content
comprehensive-sr: sr-document-series sr-document-content
confocal-microscopy-image: enhanced-general-equipment acquisition-context
confocal-microscopy-tiled-pyramidal-image: enhanced-general-equipment acquisition-context
content-assessment-results: enhanced-general-equipment
corneal-topography-map: corneal-topography-map-series enhanced-general-equipment
    corneal-topography-map-image acquisition-context
ct-defined-procedure-protocol: enhanced-general-equipment protocol-context
ct-performed-procedure-protocol: enhanced-series enhanced-general-equipment protocol-context
deformable-spatial-registration: enhanced-general-equipment
dermoscopic-photography-image: enhanced-general-equipment acquisition-context
digital-intra-oral-x-ray-image: dx-series acquisition-context
digital-mammography-x-ray-image: dx-series acquisition-context
digital-x-ray-image: dx-series acquisition-context
electromyogram: enhanced-general-equipment waveform-identification acquisition-context
electrooculogram: enhanced-general-equipment waveform-identification acquisition-context
encapsulated-cda: encapsulated-document
encapsulated-mtl: enhanced-general-equipment encapsulated-document
encapsulated-obj: enhanced-general-equipment encapsulated-document
encapsulated-pdf: encapsulated-document
encapsulated-stl: enhanced-general-equipment encapsulated-document
enhanced-continuous-rt-image: enhanced-rt-series enhanced-general-equipment
    radiotherapy-common-instance
enhanced-ct-image: ct-series enhanced-general-equipment acquisition-context enhanced-ct-image
enhanced-mr-color-image: mr-series enhanced-general-equipment acquisition-context
    enhanced-mr-image
enhanced-mr-image: mr-series enhanced-general-equipment acquisition-context enhanced-mr-image
enhanced-pet-image: enhanced-pet-series enhanced-general-equipment acquisition-context
    enhanced-pet-image
enhanced-rt-image: enhanced-rt-series enhanced-general-equipment radiotherapy-common-instance
enhanced-sr: sr-document-series sr-document-content
enhanced-us-volume: enhanced-us-series enhanced-general-equipment acquisition-context
    enhanced-us-image
enhanced-x-ray-radiation-dose-sr: sr-document-series enhanced-general-equipment
    sr-document-content
enhanced-xa-image: xa-xrf-series enhanced-general-equipment acquisition-context
    enhanced-xa-xrf-image
enhanced-xrf-image: xa-xrf-series enhanced-general-equipment acquisition-context
    enhanced-xa-xrf-image
extensible-sr: sr-document-series enhanced-general-equipment sr-document-content
general-32-bit-ecg: enhanced-general-equipment waveform-identification acquisition-context
general-audio-waveform: enhanced-general-equipment waveform-identification acquisition-context
general-ecg: waveform-identification acquisition-context
grayscale-softcopy-presentation-state: presentation-state-identification
height-map-segmentation: segmentation-series enhanced-general-equipment
hemodynamic-waveform: waveform-identification acquisition-context
implantation-plan-sr-document: sr-document-series enhanced-general-equipment
    sr-document-content
intraocular-lens-calculations: intraocular-lens-calculations-series enhanced-general-equipment
intravascular-optical-coherence-tomography-image: intravascular-oct-series
    enhanced-general-equipment acquisition-context intravascular-oct-image
keratometry-measurements: keratometry-measurements-series enhanced-general-equipment
key-object-selection-document: key-object-document-series sr-document-content
legacy-converted-enhanced-ct-image: ct-series enhanced-general-equipment acquisition-context
    enhanced-ct-image
legacy-converted-enhanced-mr-image: mr-series enhanced-general-equipment acquisition-context
    enhanced-mr-image
legacy-converted-enhanced-pet-image: enhanced-pet-series enhanced-general-equipment
    acquisition-context enhanced-pet-image
lensometry-measurements: lensometry-measurements-series enhanced-general-equipment
macular-grid-thickness-and-volume-report: sr-document-series enhanced-general-equipment
    sr-document-content
mammography-cad-sr: sr-document-series sr-document-content
microscopy-bulk-simple-annotations: microscopy-bulk-simple-annotations-series
    enhanced-general-equipment
mr-spectroscopy: mr-series enhanced-general-equipment acquisition-context mr-spectroscopy
multi-channel-respiratory-waveform: enhanced-general-equipment waveform-identification
    acquisition-context
nuclear-medicine-image: acquisition-context
ophthalmic-axial-measurements: ophthalmic-axial-measurements-series enhanced-general-equipment
ophthalmic-optical-coherence-tomography-b-scan-volume-analysis:
    ophthalmic-tomography-b-scan-volume-analysis-series enhanced-general-equipment
ophthalmic-optical-coherence-tomography-en-face-image: ophthalmic-tomography-en-face-series
    enhanced-general-equipment
ophthalmic-photography-16-bit-image: acquisition-context ophthalmic-photography-image
ophthalmic-photography-8-bit-image: acquisition-context ophthalmic-photography-image
ophthalmic-thickness-map: ophthalmic-thickness-map-series enhanced-general-equipment
    ophthalmic-thickness-map acquisition-context
ophthalmic-tomography-image: ophthalmic-tomography-series enhanced-general-equipment
    acquisition-context ophthalmic-tomography-image
ophthalmic-visual-field-static-perimetry-measurements:
    visual-field-static-perimetry-measurements-series enhanced-general-equipment
parametric-map: parametric-map-series enhanced-general-equipment acquisition-context
patient-radiation-dose-sr: sr-document-series enhanced-general-equipment sr-document-content
performed-imaging-agent-administration-sr: sr-document-series enhanced-general-equipment
    sr-document-content
photoacoustic-image: enhanced-series enhanced-general-equipment acquisition-context
    photoacoustic-image
planar-mpr-volumetric-presentation-state: enhanced-general-equipment
    volumetric-presentation-state-identification
planned-imaging-agent-administration-sr: sr-document-series enhanced-general-equipment
    sr-document-content
positron-emission-tomography-image: pet-series pet-image acquisition-context
procedure-log: sr-document-series sr-document-content
protocol-approval: enhanced-general-equipment
pseudo-color-softcopy-presentation-state: presentation-state-identification
radiopharmaceutical-radiation-dose-sr: sr-document-series enhanced-general-equipment
    sr-document-content
raw-data: acquisition-context
real-time-audio-waveform: enhanced-general-equipment waveform-identification
    acquisition-context
real-time-video-endoscopic-image: enhanced-general-equipment acquisition-context
real-time-video-photographic-image: enhanced-general-equipment acquisition-context
rendition-selection-document: key-object-document-series enhanced-general-equipment
    sr-document-content
respiratory-waveform: enhanced-general-equipment waveform-identification acquisition-context
robotic-arm-radiation: enhanced-rt-series enhanced-general-equipment
    radiotherapy-common-instance
robotic-arm-radiation-record: enhanced-rt-series enhanced-general-equipment
    radiotherapy-common-instance
routine-scalp-electroencephalogram: enhanced-general-equipment waveform-identification
    acquisition-context
rt-beams-treatment-record: rt-series rt-general-treatment-record rt-treatment-summary-record
rt-brachy-application-setup-delivery-instruction: enhanced-general-equipment
rt-brachy-treatment-record: rt-series rt-general-treatment-record rt-treatment-summary-record
rt-dose: rt-series
rt-image: rt-series approval
rt-ion-beams-treatment-record: rt-series rt-general-treatment-record
    rt-treatment-summary-record
rt-ion-plan: rt-series rt-general-plan approval
rt-patient-position-acquisition-instruction: enhanced-rt-series enhanced-general-equipment
    radiotherapy-common-instance
rt-physician-intent: enhanced-rt-series enhanced-general-equipment radiotherapy-common-instance
rt-plan: rt-series rt-general-plan approval
rt-radiation-record-set: enhanced-rt-series enhanced-general-equipment
    radiotherapy-common-instance
rt-radiation-salvage-record: enhanced-rt-series enhanced-general-equipment
    radiotherapy-common-instance
rt-radiation-set: enhanced-rt-series enhanced-general-equipment radiotherapy-common-instance
rt-radiation-set-delivery-instruction: enhanced-rt-series enhanced-general-equipment
    radiotherapy-common-instance
rt-segment-annotation: enhanced-rt-series enhanced-general-equipment
    radiotherapy-common-instance
rt-structure-set: rt-series approval
rt-treatment-preparation: enhanced-rt-series enhanced-general-equipment
    radiotherapy-common-instance
rt-treatment-summary-record: rt-series rt-general-treatment-record rt-treatment-summary-record
segmentation: segmentation-series enhanced-general-equipment
simplified-adult-echo-sr: sr-document-series enhanced-general-equipment sr-document-content
    timezone
sleep-electroencephalogram: enhanced-general-equipment waveform-identification
    acquisition-context
spectacle-prescription-report: sr-document-series enhanced-general-equipment
    sr-document-content
subjective-refraction-measurements: subjective-refraction-measurements-series
    enhanced-general-equipment
surface-scan-mesh: optical-surface-scanner-series enhanced-general-equipment scan-procedure
surface-scan-point-cloud: optical-surface-scanner-series enhanced-general-equipment
    scan-procedure
surface-segmentation: segmentation-series enhanced-general-equipment
tomotherapeutic-radiation: enhanced-rt-series enhanced-general-equipment
    radiotherapy-common-instance
tomotherapeutic-radiation-record: enhanced-rt-series enhanced-general-equipment
    radiotherapy-common-instance
tractography-results: tractography-results-series enhanced-general-equipment
ultrasound-image: us-image
ultrasound-multi-frame-image: us-image
variable-modality-lut-softcopy-presentation-state: presentation-state-identification
video-endoscopic-image: acquisition-context
video-microscopic-image: acquisition-context
video-photographic-image: acquisition-context
visual-acuity-measurements: visual-acuity-measurements-series enhanced-general-equipment
vl-endoscopic-image: acquisition-context
vl-microscopic-image: acquisition-context
vl-photographic-image: acquisition-context
vl-slide-coordinates-microscopic-image: acquisition-context
vl-whole-slide-microscopy-image: whole-slide-microscopy-series enhanced-general-equipment
    acquisition-context whole-slide-microscopy-image
volume-rendering-volumetric-presentation-state: enhanced-general-equipment
    volumetric-presentation-state-identification
waveform-acquisition-presentation-state: enhanced-general-equipment
    presentation-state-identification
waveform-annotation-sr: sr-document-series enhanced-general-equipment sr-document-content
waveform-presentation-state: enhanced-general-equipment presentation-state-identification
wide-field-ophthalmic-photography-3d-coordinates-image: enhanced-general-equipment
    acquisition-context ophthalmic-photography-image
wide-field-ophthalmic-photography-stereographic-projection-image: enhanced-general-equipment
    acquisition-context ophthalmic-photography-image
x-ray-3d-angiographic-image: enhanced-series enhanced-general-equipment acquisition-context
x-ray-3d-craniofacial-image: enhanced-series enhanced-general-equipment acquisition-context
x-ray-radiation-dose-sr: sr-document-series enhanced-general-equipment sr-document-content
xa-defined-procedure-protocol: enhanced-general-equipment protocol-context
xa-performed-procedure-protocol: enhanced-series enhanced-general-equipment protocol-context
xa-xrf-grayscale-softcopy-presentation-state: enhanced-general-equipment
    presentation-state-identification
"""
_SOP_CLASS_IOD = {
    "1.2.840.10008.5.1.4.1.1.11.10": "volume-rendering-volumetric-presentation-state",
    "1.2.840.10008.5.1.4.1.1.11.11": "volume-rendering-volumetric-presentation-state",
    "1.2.840.10008.5.1.4.1.1.11.6": "planar-mpr-volumetric-presentation-state",
    "1.2.840.10008.5.1.4.1.1.11.7": "planar-mpr-volumetric-presentation-state",
    "1.2.840.10008.5.1.4.1.1.481.20": "robotic-arm-radiation-record",
    "1.2.840.10008.5.1.4.1.1.66.7": "segmentation",
    "1.2.840.10008.5.1.4.1.1.66.8": "height-map-segmentation",
    "1.2.840.10008.5.1.4.1.1.88.70": "implantation-plan-sr-document",
    "1.2.840.10008.5.1.4.1.1.9.100.1": "waveform-presentation-state",
    "1.2.840.10008.5.1.4.1.1.9.100.2": "waveform-acquisition-presentation-state",
    "1.2.840.10008.5.1.4.1.1.9.2.1": "hemodynamic-waveform",
    "1.2.840.10008.5.1.4.1.1.9.3.1": "basic-cardiac-electrophysiology-waveform",
    "1.2.840.10008.5.1.4.1.1.9.4.1": "basic-voice-audio-waveform",
    "1.2.840.10008.5.1.4.1.1.9.4.2": "general-audio-waveform",
    "1.2.840.10008.5.1.4.1.1.9.5.1": "arterial-pulse-waveform",
    "1.2.840.10008.5.1.4.1.1.9.6.1": "respiratory-waveform",
    "1.2.840.10008.5.1.4.1.1.9.6.2": "multi-channel-respiratory-waveform",
    "1.2.840.10008.5.1.4.1.1.9.8.1": "body-position-waveform",
}
# fmt: on


def _parse_pairs(text: str) -> dict[str, str]:
    """``Keyword=1`` / ``Sequence/Keyword=2`` items separated by white space."""
    out: dict[str, str] = {}
    for item in text.split():
        key, _, kind = item.partition("=")
        out[key] = kind
    return out


def _parse_lines(text: str) -> dict[str, str]:
    """``name: rest`` lines (continuation lines start with white space) → {name: rest}."""
    out: dict[str, str] = {}
    name = ""
    for line in text.splitlines():
        if not line.strip():
            continue
        if line[0].isspace():
            out[name] += " " + line.strip()
        else:
            name, _, rest = line.partition(":")
            out[name] = rest.strip()
    return out


_MODULE_REQUIRED: dict[str, dict[str, str]] = {
    name: _parse_pairs(rest) for name, rest in _parse_lines(_MODULES).items()
}
_IOD_MODULES: dict[str, tuple[str, ...]] = {
    name: tuple(rest.split()) for name, rest in _parse_lines(_IODS).items()
}

#: Requirements inside sequence items: (enclosing sequence keyword, keyword) → Required.
NESTED: Mapping[tuple[str, str], Required] = MappingProxyType(
    {tuple(k.split("/")): v for k, v in _parse_pairs(_NESTED).items()}  # type: ignore[misc]
)

#: Every keyword that some IOD may require somewhere (the others need no look-up).
MAYBE_REQUIRED: frozenset[str] = frozenset(
    {k for _, k in NESTED} | {k for reqs in _MODULE_REQUIRED.values() for k in reqs}
)


def _iod_of(sop_class_uid: str) -> str | None:
    """The IOD key of a SOP class: its registered name slugged, or the listed exception."""
    known = _SOP_CLASS_IOD.get(sop_class_uid)
    if known is not None:
        return known
    entry = UID_dictionary.get(sop_class_uid)
    if entry is None:
        return None
    name = re.sub(r" Storage.*$", "", entry[0])
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug if slug in _IOD_MODULES else re.sub(r"-waveform$", "", slug)


def _merge(into: dict[str, Required], reqs: Mapping[str, Required]) -> None:
    for keyword, kind in reqs.items():
        if kind < into.get(keyword, "3"):  # "1" is stronger than "2"
            into[keyword] = kind


@functools.cache
def requirements(sop_class_uid: str) -> Mapping[str, Required]:
    """Top-level attributes (keyword → Required) that a module of this SOP class's IOD may
    require, among those the Basic Profile would remove or empty."""
    out: dict[str, Required] = {}
    uid = sop_class_uid.strip().rstrip("\x00")
    if not uid:  # no SOP class, no IOD: nothing is known to be required
        return MappingProxyType(out)
    modules = _EVERY_IOD + _IOD_MODULES.get(_iod_of(uid) or "", ())
    for module in modules:
        _merge(out, _MODULE_REQUIRED.get(module, {}))
    return MappingProxyType(out)


#: Attributes whose value another attribute's condition reads: Responsible Person Role is Type
#: 1C "if Responsible Person is present and has a value" (C.7.1.1), so when the role is there,
#: an emptied Responsible Person would make it "present when condition unsatisfied": a dummy.
_VALUE_READ_BY = {"ResponsiblePerson": "ResponsiblePersonRole"}


def required_at_top(keyword: str, root: Dataset) -> Required | None:
    """What the IOD of ``root`` requires of its top-level attribute ``keyword``."""
    required = requirements(str(root.get("SOPClassUID", "") or "")).get(keyword)
    reader = _VALUE_READ_BY.get(keyword)
    if required is not None and reader is not None and root.get(reader, None) is not None:
        return "1" if root[reader].value not in (None, "", b"") else required
    return required


def resolve(code: str, required: Required | None, empty: bool) -> str:
    """The single action (X, Z, D, U, ...) that ``code`` takes for an attribute present in the
    instance, given what its IOD requires of it where it stands (None: not required)."""
    if code == "Z/D":
        return "D" if required == "1" or not empty else "Z"
    if code == "X/Z/U*":
        return "U"
    if code not in ("X", "Z", "X/Z", "X/D", "X/Z/D"):
        return code
    if required is None:
        return "Z" if code == "Z" else "X"
    if required == "1":
        return "D"
    return "D" if code == "X/D" else "Z"


def _required_at_top(keyword: str) -> Callable[[Dataset], bool]:
    def required(ds: Dataset) -> bool:
        return keyword in requirements(str(ds.get("SOPClassUID", "") or ""))

    return required


#: keyword → "does this instance's IOD require it at the top level?" (the earlier interface,
#: kept for callers that ask per keyword; :func:`requirements` gives the type too).
REQUIRED: Mapping[str, Callable[[Dataset], bool]] = MappingProxyType(
    {k: _required_at_top(k) for reqs in _MODULE_REQUIRED.values() for k in reqs}
)
