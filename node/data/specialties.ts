/**
 * Hospital specialties from MeSH terms: each pattern is matched against a record's MeSH headings and the record
 * goes to the specialty with the most matching headings (ties: the earlier row). Records matching none are
 * "general medicine". Age-group headings (Child, Adolescent) are too common to mark paediatrics alone.
 */
/** One pattern matching any of the alternatives (each a `|`-separated list). */
function anyOf(...alternatives: string[]): RegExp {
  return new RegExp(alternatives.join("|"));
}

export const SPECIALTIES: readonly { name: string; pattern: RegExp }[] = [
  {
    name: "oncology",
    pattern: anyOf(
      "Neoplasm|Cancer|Carcinoma|Tumor|Lymphoma|Leukemia|Melanoma|Sarcoma",
      "Radiotherapy|Antineoplastic|Mastectomy|Metasta|Oncolog",
    ),
  },
  {
    name: "cardiovascular",
    pattern: anyOf(
      "Heart|Cardi|Coronary|Myocard|Hypertension|Vascular|Aort|Arter|Atrial",
      "Blood Pressure|Angioplasty|Thromb|Venous|Vein|Embolism",
    ),
  },
  {
    name: "obstetrics & paediatrics",
    pattern:
      /Pregnan|Infant|Fetal|Fetus|Obstetric|Cesarean|Neonat|Prenatal|Birth|Gestation|Pediatric|Puerper|Breast Feeding/,
  },
  {
    name: "surgery",
    pattern: anyOf(
      "Surg|Laparoscop|Postoperative|Preoperative|Intraoperative|Anastomo|Transplant",
      "Resection|Suture|Hernia|Arthroplasty|ectomy|Fracture",
    ),
  },
  {
    name: "infectious disease",
    pattern: anyOf(
      "Infect|Bacteri|Virus|Viral|HIV|Hepatitis|Tubercul|Antibiot|Anti-Bacterial",
      "Sepsis|Pneumonia|Vaccin|Influenza|Malaria|Antiviral",
    ),
  },
  {
    name: "neurology & psychiatry",
    pattern: anyOf(
      "Brain|Neur|Cerebr|Stroke|Epilep|Dementia|Alzheimer|Depress|Anxiety|Schizo",
      "Mental|Psych|Cognit|Spinal|Parkinson|Autis|Substance|Alcohol",
    ),
  },
];

export const GENERAL_MEDICINE = "general medicine";

/** The specialty of a record with these MeSH headings. */
export function specialtyOf(meshes: readonly string[]): string {
  let best = -1;
  let bestScore = 0;
  SPECIALTIES.forEach((s, i) => {
    const score = meshes.filter((m) => s.pattern.test(m)).length;
    if (score > bestScore) {
      best = i;
      bestScore = score;
    }
  });
  return best < 0 ? GENERAL_MEDICINE : SPECIALTIES[best]!.name;
}
