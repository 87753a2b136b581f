//! JaSMIn (seed 000: 先天代謝異常症患者登録制度, Japan Registration System for Metabolic &
//! Inherited Diseases), the fourth registry: its public reference lists and its synthetic
//! registrants.
//!
//! The seed describes a self-registration registry: the patient or a guardian registers;
//! registrants are counted by 15 disease groups and 80 disease names, by sex (55 % male,
//! 0.1 % unknown) and age (median 18.2, mean 21.3, 55.8 % under 20), and 99.0 % can be
//! contacted. The seed's table 1 (the disease names) is an image the text does not carry,
//! so the names below follow the usual classification of inherited metabolic diseases;
//! where a disease is a designated intractable disease its notification number (告示番号)
//! is given, so an approval's disease list (form 1 item 1) can select registrants.
//!
//! Guarantees: the lists are fixed (the same for every seed); the registrants are a pure
//! function of `(seed, registry numbers)` drawn from their own stream, so adding JaSMIn
//! left the other registries' streams as they were.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// A disease group (疾患群).
pub struct Group {
    pub code: &'static str,
    pub name_ja: &'static str,
    pub name_en: &'static str,
}

/// One disease name of the registry.
pub struct Disease {
    pub code: &'static str,
    pub group: &'static str,
    pub name_ja: &'static str,
    pub name_en: &'static str,
    /// Designated intractable disease number, where the disease is designated.
    pub disease_no: Option<i32>,
    /// Relative number of registrants.
    pub weight: u32,
    /// Probability that a registrant is male (X-linked diseases mostly male).
    pub male: f64,
}

pub const GROUPS: &[Group] = &[
    g("G01", "アミノ酸代謝異常症", "Amino acid disorders"),
    g("G02", "有機酸代謝異常症", "Organic acidurias"),
    g("G03", "脂肪酸代謝異常症", "Fatty acid oxidation disorders"),
    g("G04", "尿素サイクル異常症", "Urea cycle disorders"),
    g("G05", "糖質代謝異常症", "Carbohydrate metabolism disorders"),
    g("G06", "ライソゾーム病", "Lysosomal storage diseases"),
    g("G07", "ペルオキシソーム病", "Peroxisomal disorders"),
    g("G08", "ミトコンドリア病", "Mitochondrial diseases"),
    g("G09", "金属代謝異常症", "Disorders of metal metabolism"),
    g("G10", "脂質代謝異常症", "Lipid metabolism disorders"),
    g("G11", "ポルフィリン症", "Porphyrias"),
    g("G12", "核酸代謝異常症", "Purine and pyrimidine disorders"),
    g("G13", "ビタミン関連代謝異常症", "Vitamin-related disorders"),
    g("G14", "神経伝達物質異常症", "Neurotransmitter disorders"),
    g(
        "G15",
        "その他の先天代謝異常症",
        "Other inherited metabolic diseases",
    ),
];

const fn g(code: &'static str, name_ja: &'static str, name_en: &'static str) -> Group {
    Group {
        code,
        name_ja,
        name_en,
    }
}

const fn d(
    code: &'static str,
    name_ja: &'static str,
    name_en: &'static str,
    disease_no: Option<i32>,
    weight: u32,
    male: f64,
) -> Disease {
    // The group is the code's first three characters with a `G`: J0101 → G01.
    let group = match code.as_bytes() {
        [_, b'0', b'1', ..] => "G01",
        [_, b'0', b'2', ..] => "G02",
        [_, b'0', b'3', ..] => "G03",
        [_, b'0', b'4', ..] => "G04",
        [_, b'0', b'5', ..] => "G05",
        [_, b'0', b'6', ..] => "G06",
        [_, b'0', b'7', ..] => "G07",
        [_, b'0', b'8', ..] => "G08",
        [_, b'0', b'9', ..] => "G09",
        [_, b'1', b'0', ..] => "G10",
        [_, b'1', b'1', ..] => "G11",
        [_, b'1', b'2', ..] => "G12",
        [_, b'1', b'3', ..] => "G13",
        [_, b'1', b'4', ..] => "G14",
        _ => "G15",
    };
    Disease {
        code,
        group,
        name_ja,
        name_en,
        disease_no,
        weight,
        male,
    }
}

const LSD: Option<i32> = Some(19);
const MITO: Option<i32> = Some(21);
const UCD: Option<i32> = Some(251);
const PORPH: Option<i32> = Some(254);

pub const DISEASES: &[Disease] = &[
    d(
        "J0101",
        "フェニルケトン尿症",
        "Phenylketonuria",
        Some(240),
        120,
        0.5,
    ),
    d(
        "J0102",
        "メープルシロップ尿症",
        "Maple syrup urine disease",
        Some(244),
        15,
        0.5,
    ),
    d(
        "J0103",
        "ホモシスチン尿症",
        "Homocystinuria",
        Some(337),
        12,
        0.5,
    ),
    d(
        "J0104",
        "高チロシン血症1型",
        "Tyrosinaemia type 1",
        Some(241),
        4,
        0.5,
    ),
    d(
        "J0105",
        "高チロシン血症2型",
        "Tyrosinaemia type 2",
        Some(242),
        2,
        0.5,
    ),
    d(
        "J0106",
        "高チロシン血症3型",
        "Tyrosinaemia type 3",
        Some(243),
        1,
        0.5,
    ),
    d(
        "J0107",
        "非ケトーシス型高グリシン血症",
        "Nonketotic hyperglycinaemia",
        None,
        6,
        0.5,
    ),
    d(
        "J0108",
        "シトリン欠損症",
        "Citrin deficiency",
        None,
        30,
        0.5,
    ),
    d(
        "J0201",
        "メチルマロン酸血症",
        "Methylmalonic acidaemia",
        Some(246),
        55,
        0.5,
    ),
    d(
        "J0202",
        "プロピオン酸血症",
        "Propionic acidaemia",
        Some(245),
        45,
        0.5,
    ),
    d(
        "J0203",
        "イソ吉草酸血症",
        "Isovaleric acidaemia",
        Some(247),
        6,
        0.5,
    ),
    d(
        "J0204",
        "グルタル酸血症1型",
        "Glutaric aciduria type 1",
        Some(249),
        10,
        0.5,
    ),
    d(
        "J0205",
        "複合カルボキシラーゼ欠損症",
        "Multiple carboxylase deficiency",
        Some(255),
        3,
        0.5,
    ),
    d(
        "J0206",
        "3-ヒドロキシ-3-メチルグルタル酸血症",
        "HMG-CoA lyase deficiency",
        None,
        3,
        0.5,
    ),
    d(
        "J0301",
        "中鎖アシルCoA脱水素酵素欠損症",
        "MCAD deficiency",
        None,
        15,
        0.5,
    ),
    d(
        "J0302",
        "極長鎖アシルCoA脱水素酵素欠損症",
        "VLCAD deficiency",
        None,
        15,
        0.5,
    ),
    d(
        "J0303",
        "カルニチンパルミトイルトランスフェラーゼ1欠損症",
        "CPT1 deficiency",
        None,
        5,
        0.5,
    ),
    d(
        "J0304",
        "カルニチンパルミトイルトランスフェラーゼ2欠損症",
        "CPT2 deficiency",
        None,
        10,
        0.6,
    ),
    d(
        "J0305",
        "三頭酵素欠損症",
        "Mitochondrial trifunctional protein deficiency",
        None,
        4,
        0.5,
    ),
    d(
        "J0306",
        "グルタル酸血症2型",
        "Glutaric aciduria type 2",
        Some(250),
        8,
        0.5,
    ),
    d(
        "J0307",
        "全身性カルニチン欠乏症",
        "Primary systemic carnitine deficiency",
        None,
        6,
        0.5,
    ),
    d(
        "J0401",
        "オルニチントランスカルバミラーゼ欠損症",
        "OTC deficiency",
        UCD,
        60,
        0.7,
    ),
    d(
        "J0402",
        "カルバミルリン酸合成酵素1欠損症",
        "CPS1 deficiency",
        UCD,
        8,
        0.5,
    ),
    d(
        "J0403",
        "シトルリン血症1型",
        "Citrullinaemia type 1",
        UCD,
        15,
        0.5,
    ),
    d(
        "J0404",
        "アルギニノコハク酸尿症",
        "Argininosuccinic aciduria",
        UCD,
        8,
        0.5,
    ),
    d("J0405", "アルギニン血症", "Argininaemia", UCD, 4, 0.5),
    d(
        "J0406",
        "リジン尿性蛋白不耐症",
        "Lysinuric protein intolerance",
        Some(252),
        8,
        0.5,
    ),
    d(
        "J0501",
        "肝型糖原病",
        "Hepatic glycogen storage disease",
        Some(257),
        55,
        0.5,
    ),
    d(
        "J0502",
        "筋型糖原病",
        "Muscle glycogen storage disease",
        Some(256),
        10,
        0.6,
    ),
    d(
        "J0503",
        "ガラクトース血症",
        "Galactosaemia (GALT deficiency)",
        Some(258),
        8,
        0.5,
    ),
    d(
        "J0504",
        "遺伝性果糖不耐症",
        "Hereditary fructose intolerance",
        None,
        3,
        0.5,
    ),
    d(
        "J0505",
        "グルコーストランスポーター1欠損症",
        "GLUT1 deficiency",
        Some(248),
        25,
        0.5,
    ),
    d("J0601", "ゴーシェ病", "Gaucher disease", LSD, 25, 0.5),
    d("J0602", "ファブリー病", "Fabry disease", LSD, 70, 0.7),
    d("J0603", "ポンペ病", "Pompe disease", LSD, 35, 0.5),
    d(
        "J0604",
        "ムコ多糖症I型",
        "Mucopolysaccharidosis type I",
        LSD,
        12,
        0.5,
    ),
    d(
        "J0605",
        "ムコ多糖症II型",
        "Mucopolysaccharidosis type II (Hunter)",
        LSD,
        50,
        1.0,
    ),
    d(
        "J0606",
        "ムコ多糖症IVA型",
        "Mucopolysaccharidosis type IVA",
        LSD,
        10,
        0.5,
    ),
    d(
        "J0607",
        "ムコ多糖症VI型",
        "Mucopolysaccharidosis type VI",
        LSD,
        3,
        0.5,
    ),
    d(
        "J0608",
        "ニーマン・ピック病C型",
        "Niemann-Pick disease type C",
        LSD,
        12,
        0.5,
    ),
    d(
        "J0609",
        "異染性白質ジストロフィー",
        "Metachromatic leukodystrophy",
        LSD,
        8,
        0.5,
    ),
    d("J0610", "クラッベ病", "Krabbe disease", LSD, 5, 0.5),
    d(
        "J0611",
        "GM1ガングリオシドーシス",
        "GM1 gangliosidosis",
        LSD,
        5,
        0.5,
    ),
    d(
        "J0612",
        "GM2ガングリオシドーシス",
        "GM2 gangliosidosis",
        LSD,
        5,
        0.5,
    ),
    d(
        "J0613",
        "神経セロイドリポフスチン症",
        "Neuronal ceroid lipofuscinosis",
        LSD,
        8,
        0.5,
    ),
    d(
        "J0614",
        "ライソゾーム酸性リパーゼ欠損症",
        "Lysosomal acid lipase deficiency",
        LSD,
        3,
        0.5,
    ),
    d("J0615", "シスチン症", "Cystinosis", LSD, 4, 0.5),
    d(
        "J0701",
        "副腎白質ジストロフィー",
        "Adrenoleukodystrophy",
        Some(20),
        40,
        1.0,
    ),
    d(
        "J0702",
        "ツェルベーガー症候群スペクトラム",
        "Zellweger spectrum disorder",
        Some(234),
        6,
        0.5,
    ),
    d("J0703", "レフサム病", "Refsum disease", Some(234), 2, 0.5),
    d(
        "J0704",
        "原発性高シュウ酸尿症1型",
        "Primary hyperoxaluria type 1",
        None,
        4,
        0.5,
    ),
    d("J0801", "MELAS", "MELAS", MITO, 60, 0.5),
    d("J0802", "リー脳症", "Leigh syndrome", MITO, 40, 0.5),
    d("J0803", "MERRF", "MERRF", MITO, 8, 0.5),
    d(
        "J0804",
        "慢性進行性外眼筋麻痺症候群",
        "Chronic progressive external ophthalmoplegia",
        MITO,
        10,
        0.5,
    ),
    d(
        "J0805",
        "ピルビン酸脱水素酵素複合体欠損症",
        "Pyruvate dehydrogenase complex deficiency",
        MITO,
        10,
        0.5,
    ),
    d(
        "J0901",
        "ウィルソン病",
        "Wilson disease",
        Some(171),
        60,
        0.5,
    ),
    d("J0902", "メンケス病", "Menkes disease", Some(169), 10, 1.0),
    d(
        "J0903",
        "オクシピタル・ホーン症候群",
        "Occipital horn syndrome",
        Some(170),
        2,
        1.0,
    ),
    d(
        "J1001",
        "家族性高コレステロール血症（ホモ接合体）",
        "Familial hypercholesterolaemia (homozygous)",
        Some(79),
        20,
        0.5,
    ),
    d(
        "J1002",
        "シトステロール血症",
        "Sitosterolaemia",
        Some(260),
        5,
        0.5,
    ),
    d(
        "J1003",
        "タンジール病",
        "Tangier disease",
        Some(261),
        2,
        0.5,
    ),
    d(
        "J1004",
        "原発性高カイロミクロン血症",
        "Primary hyperchylomicronaemia",
        Some(262),
        5,
        0.5,
    ),
    d(
        "J1005",
        "脳腱黄色腫症",
        "Cerebrotendinous xanthomatosis",
        Some(263),
        4,
        0.5,
    ),
    d(
        "J1006",
        "無βリポタンパク血症",
        "Abetalipoproteinaemia",
        Some(264),
        2,
        0.5,
    ),
    d(
        "J1007",
        "レシチンコレステロールアシルトランスフェラーゼ欠損症",
        "LCAT deficiency",
        Some(259),
        2,
        0.5,
    ),
    d(
        "J1101",
        "急性間欠性ポルフィリン症",
        "Acute intermittent porphyria",
        PORPH,
        10,
        0.3,
    ),
    d(
        "J1102",
        "骨髄性プロトポルフィリン症",
        "Erythropoietic protoporphyria",
        PORPH,
        12,
        0.5,
    ),
    d(
        "J1103",
        "先天性骨髄性ポルフィリン症",
        "Congenital erythropoietic porphyria",
        PORPH,
        2,
        0.5,
    ),
    d(
        "J1201",
        "レッシュ・ナイハン症候群",
        "Lesch-Nyhan syndrome",
        None,
        8,
        1.0,
    ),
    d(
        "J1202",
        "アデノシンデアミナーゼ欠損症",
        "Adenosine deaminase deficiency",
        None,
        3,
        0.5,
    ),
    d(
        "J1301",
        "先天性葉酸吸収不全",
        "Hereditary folate malabsorption",
        Some(253),
        2,
        0.5,
    ),
    d(
        "J1302",
        "ビオチニダーゼ欠損症",
        "Biotinidase deficiency",
        None,
        3,
        0.5,
    ),
    d(
        "J1303",
        "コバラミン代謝異常症（cblC）",
        "Cobalamin C disease",
        None,
        5,
        0.5,
    ),
    d(
        "J1401",
        "芳香族L-アミノ酸脱炭酸酵素欠損症",
        "AADC deficiency",
        None,
        4,
        0.5,
    ),
    d(
        "J1402",
        "瀬川病",
        "Segawa disease (GTP cyclohydrolase 1 deficiency)",
        None,
        12,
        0.3,
    ),
    d(
        "J1403",
        "セピアプテリン還元酵素欠損症",
        "Sepiapterin reductase deficiency",
        None,
        2,
        0.5,
    ),
    d(
        "J1501",
        "クレアチントランスポーター欠損症",
        "Creatine transporter deficiency",
        None,
        4,
        1.0,
    ),
    d(
        "J1502",
        "グアニジノ酢酸メチルトランスフェラーゼ欠損症",
        "GAMT deficiency",
        None,
        3,
        0.5,
    ),
    d(
        "J1503",
        "先天性グリコシル化異常症",
        "Congenital disorders of glycosylation",
        None,
        6,
        0.5,
    ),
];

/// Designated intractable diseases among the metabolic diseases above: they join the
/// public `disease` reference table (group 代謝系疾患) so approvals can name them.
pub const DESIGNATED: &[(i32, &str, &str)] = &[
    (19, "ライソゾーム病", "Lysosomal storage diseases"),
    (20, "副腎白質ジストロフィー", "Adrenoleukodystrophy"),
    (21, "ミトコンドリア病", "Mitochondrial disease"),
    (
        79,
        "家族性高コレステロール血症（ホモ接合体）",
        "Familial hypercholesterolaemia (homozygous)",
    ),
    (169, "メンケス病", "Menkes disease"),
    (170, "オクシピタル・ホーン症候群", "Occipital horn syndrome"),
    (171, "ウィルソン病", "Wilson disease"),
    (
        234,
        "ペルオキシソーム病（副腎白質ジストロフィーを除く。）",
        "Peroxisomal disorders (excluding adrenoleukodystrophy)",
    ),
    (240, "フェニルケトン尿症", "Phenylketonuria"),
    (241, "高チロシン血症1型", "Tyrosinaemia type 1"),
    (242, "高チロシン血症2型", "Tyrosinaemia type 2"),
    (243, "高チロシン血症3型", "Tyrosinaemia type 3"),
    (244, "メープルシロップ尿症", "Maple syrup urine disease"),
    (245, "プロピオン酸血症", "Propionic acidaemia"),
    (246, "メチルマロン酸血症", "Methylmalonic acidaemia"),
    (247, "イソ吉草酸血症", "Isovaleric acidaemia"),
    (248, "グルコーストランスポーター1欠損症", "GLUT1 deficiency"),
    (249, "グルタル酸血症1型", "Glutaric aciduria type 1"),
    (250, "グルタル酸血症2型", "Glutaric aciduria type 2"),
    (251, "尿素サイクル異常症", "Urea cycle disorders"),
    (252, "リジン尿性蛋白不耐症", "Lysinuric protein intolerance"),
    (253, "先天性葉酸吸収不全", "Hereditary folate malabsorption"),
    (254, "ポルフィリン症", "Porphyria"),
    (
        255,
        "複合カルボキシラーゼ欠損症",
        "Multiple carboxylase deficiency",
    ),
    (256, "筋型糖原病", "Muscle glycogen storage disease"),
    (257, "肝型糖原病", "Hepatic glycogen storage disease"),
    (
        258,
        "ガラクトース－１－リン酸ウリジルトランスフェラーゼ欠損症",
        "Galactose-1-phosphate uridylyltransferase deficiency",
    ),
    (
        259,
        "レシチンコレステロールアシルトランスフェラーゼ欠損症",
        "LCAT deficiency",
    ),
    (260, "シトステロール血症", "Sitosterolaemia"),
    (261, "タンジール病", "Tangier disease"),
    (
        262,
        "原発性高カイロミクロン血症",
        "Primary hyperchylomicronaemia",
    ),
    (263, "脳腱黄色腫症", "Cerebrotendinous xanthomatosis"),
    (264, "無βリポタンパク血症", "Abetalipoproteinaemia"),
    (337, "ホモシスチン尿症", "Homocystinuria"),
];

/// The disease group of designated metabolic diseases in the `disease` table.
pub const DESIGNATED_GROUP: &str = "代謝系疾患";

/// Registrations began when the ethics committee approved JaSMIn (2012-05-21).
pub const FIRST_REGISTRATION: (i32, u32, u32) = (2012, 5, 21);

/// One registrant as the source files hold it.
pub struct Registrant {
    pub disease: &'static Disease,
    /// `M`, `F`, or `None` when not given (the seed counts 0.1 % unknown).
    pub sex: Option<bool>,
    /// Age in whole years at the end of the data (31 March 2026).
    pub age: u32,
    /// A guardian registered (保護者) rather than the patient (本人).
    pub guardian: bool,
    pub contactable: bool,
    /// Date of birth, days since 1970-01-01.
    pub born: i32,
    /// Days since 1970-01-01.
    pub registered: i32,
}

/// The fraction of registrants the synthetic registry holds: one in 25 of all patients
/// (about 2,000 at the demo size, the order of the seed's 1,807).
pub const SHARE: u64 = 25;

/// Draw one registrant; `pick_disease` chooses by weight, `first_day` is the first
/// possible registration, `data_end` the day ages are counted at (and the last
/// registration), `last_birth` the latest birth date the catalogue admits.
pub fn draw(
    rng: &mut ChaCha8Rng,
    pick_disease: impl FnOnce(&mut ChaCha8Rng) -> usize,
    first_day: i32,
    data_end: i32,
    last_birth: i32,
) -> Registrant {
    let disease = &DISEASES[pick_disease(rng)];
    // Log-normal age: median 18, mean about 21.5, about 57 % under 20 (seed: 18.2, 21.3, 55.8 %).
    let z = {
        let u1: f64 = rng.random::<f64>().max(1e-12);
        let u2: f64 = rng.random();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    };
    let age = (18.0 * (0.6 * z).exp()).clamp(0.0, 85.0) as u32;
    let sex = (!rng.random_bool(0.001)).then(|| rng.random_bool(disease.male));
    let guardian = match age {
        0..=14 => rng.random_bool(0.95),
        15..=19 => rng.random_bool(0.6),
        _ => rng.random_bool(0.05),
    };
    let born = (data_end - (age as f64 * 365.25) as i32 - rng.random_range(0..365)).min(last_birth);
    let registered = rng.random_range(first_day.max(born)..=data_end);
    Registrant {
        disease,
        sex,
        age,
        guardian,
        contactable: rng.random_bool(0.99),
        born,
        registered,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn fifteen_groups_and_eighty_names_as_in_the_seed() {
        assert_eq!(GROUPS.len(), 15);
        assert_eq!(DISEASES.len(), 80);
        let codes: BTreeSet<&str> = DISEASES.iter().map(|d| d.code).collect();
        assert_eq!(codes.len(), 80, "codes are unique");
        let groups: BTreeSet<&str> = GROUPS.iter().map(|g| g.code).collect();
        let used: BTreeSet<&str> = DISEASES.iter().map(|d| d.group).collect();
        assert_eq!(
            groups, used,
            "every group has diseases, every disease a group"
        );
        let designated: BTreeSet<i32> = DESIGNATED.iter().map(|d| d.0).collect();
        for d in DISEASES {
            if let Some(n) = d.disease_no {
                assert!(designated.contains(&n), "{} names {n}", d.code);
            }
        }
    }
}
