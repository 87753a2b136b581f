//! Ingest, machine judgement of the severity criteria (seed 003 「機械判定」, the tables of
//! seed 002 「重症患者認定基準表」): per clinical survey, whether the laboratory findings of
//! a criterion table meet its abnormal values. Ingest writes each judgement as a Boolean
//! catalogue column beside the values it was derived from, so researchers count "patients
//! meeting the respiratory criterion" under the usual disclosure rules instead of
//! re-implementing the thresholds in every query.
//!
//! Guarantees:
//! - Each criterion is the finding part of one table of the seed, with the seed's
//!   thresholds and their edges exactly as written (以下 ≤, 以上 ≥, 未満 <).
//! - A criterion over several items holds when any item meets its threshold
//!   (「いずれか」). Missing values follow three-valued logic: true when a present
//!   item meets its threshold, false only when every item is present and none does,
//!   otherwise NULL — a missing value never reads as "not abnormal".
//! - Only what the registry records is judged: the clinical-symptom parts of the criteria
//!   (activity level, B/D/F/H/J tables) are not in the data, so a `true` here means "the
//!   laboratory findings meet the criterion", not "the patient is certified severe".

/// How one item's value is compared with its threshold (the seed's wording in brackets).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Test {
    /// value ≤ t (「t 以下」)
    AtMost(f64),
    /// value ≥ t (「t 以上」)
    AtLeast(f64),
    /// value < t (「t 未満」)
    Below(f64),
    /// lo ≤ value < hi (「lo 以上 hi 未満」)
    Band(f64, f64),
}

impl Test {
    pub fn holds(self, x: f64) -> bool {
        match self {
            Test::AtMost(t) => x <= t,
            Test::AtLeast(t) => x >= t,
            Test::Below(t) => x < t,
            Test::Band(lo, hi) => lo <= x && x < hi,
        }
    }
}

/// One laboratory item of a criterion: the source column it reads and its abnormal value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Item {
    pub source: &'static str,
    pub test: Test,
}

/// A criterion: the catalogue column it becomes, the seed table it comes from, and its
/// items (at most [`MAX_ITEMS`]), any one of which meets it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Criterion {
    pub column: &'static str,
    pub table: &'static str,
    pub items: &'static [Item],
}

/// The most items one criterion reads (E表 has three).
pub const MAX_ITEMS: usize = 3;

impl Criterion {
    /// The judgement over the item values (in `items` order; `None` = missing).
    pub fn judge(&self, values: &[Option<f64>]) -> Option<bool> {
        let mut unknown = false;
        for (item, v) in self.items.iter().zip(values) {
            match v {
                Some(x) if item.test.holds(*x) => return Some(true),
                Some(_) => {}
                None => unknown = true,
            }
        }
        // Fewer values than items counts as missing too: never a silent false.
        if unknown || values.len() < self.items.len() {
            None
        } else {
            Some(false)
        }
    }
}

const fn item(source: &'static str, test: Test) -> Item {
    Item { source, test }
}

// 呼吸器 A表 (動脈血ガス分析値): 動脈血O2分圧 55 mmHg 以下, 動脈血CO2分圧 60 mmHg 以上.
pub const RESP_A: Criterion = Criterion {
    column: "sev_resp_blood_gas",
    table: "A表",
    items: &[
        item("pao2", Test::AtMost(55.0)),
        item("paco2", Test::AtLeast(60.0)),
    ],
};

// 腎臓 E表: 内因性クレアチニン・クリアランス 10 ml/分 未満, 血清クレアチニン 8 mg/dl 以上,
// 血液尿素窒素 80 mg/dl 以上 (いずれか 1 つ以上).
pub const RENAL_E: Criterion = Criterion {
    column: "sev_renal_lab",
    table: "E表",
    items: &[
        item("ccr", Test::Below(10.0)),
        item("creatinine", Test::AtLeast(8.0)),
        item("bun", Test::AtLeast(80.0)),
    ],
};

// 肝臓 G表 系列A アルブミン: 異常値 2.8 以上 3.8 未満, 高度異常値 2.8 未満.
pub const LIVER_ALBUMIN: Criterion = Criterion {
    column: "sev_liver_albumin_abnormal",
    table: "G表 A",
    items: &[item("albumin", Test::Band(2.8, 3.8))],
};
pub const LIVER_ALBUMIN_HIGH: Criterion = Criterion {
    column: "sev_liver_albumin_high",
    table: "G表 A",
    items: &[item("albumin", Test::Below(2.8))],
};

// 肝臓 G表 系列B 血清総ビリルビン: 異常値 1.0 以上 5.0 未満, 高度異常値 5.0 以上.
pub const LIVER_BILIRUBIN: Criterion = Criterion {
    column: "sev_liver_bilirubin_abnormal",
    table: "G表 B",
    items: &[item("bilirubin", Test::Band(1.0, 5.0))],
};
pub const LIVER_BILIRUBIN_HIGH: Criterion = Criterion {
    column: "sev_liver_bilirubin_high",
    table: "G表 B",
    items: &[item("bilirubin", Test::AtLeast(5.0))],
};

// 血液 I表 1(1): 血色素量 6.0 g/dl 未満.
pub const BLOOD_HEMOGLOBIN: Criterion = Criterion {
    column: "sev_blood_hemoglobin_low",
    table: "I表 1",
    items: &[item("hemoglobin", Test::Below(6.0))],
};

// 血液 I表 3: 血小板数 1万/mm3 未満 (platelets are recorded in 10^4/μl = 万/mm3).
pub const BLOOD_PLATELETS: Criterion = Criterion {
    column: "sev_blood_platelets_low",
    table: "I表 3",
    items: &[item("platelets", Test::Below(1.0))],
};

// 出血傾向 K表 2: 血小板数 3万/mm3 未満.
pub const BLEEDING_PLATELETS: Criterion = Criterion {
    column: "sev_bleeding_platelets_low",
    table: "K表 2",
    items: &[item("platelets", Test::Below(3.0))],
};

/// Every criterion ingest judges.
pub const CRITERIA: &[Criterion] = &[
    RESP_A,
    RENAL_E,
    LIVER_ALBUMIN,
    LIVER_ALBUMIN_HIGH,
    LIVER_BILIRUBIN,
    LIVER_BILIRUBIN_HIGH,
    BLOOD_HEMOGLOBIN,
    BLOOD_PLATELETS,
    BLEEDING_PLATELETS,
];

/// The criterion behind a catalogue column, if it is one.
pub fn criterion(column: &str) -> Option<&'static Criterion> {
    CRITERIA.iter().find(|c| c.column == column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &str) -> &'static Criterion {
        criterion(name).unwrap()
    }

    #[test]
    fn respiratory_edges_are_inclusive_as_written() {
        let a = c("sev_resp_blood_gas");
        // PaO2 55 以下: 55.0 meets it, 55.1 does not.
        assert_eq!(a.judge(&[Some(55.0), Some(40.0)]), Some(true));
        assert_eq!(a.judge(&[Some(55.1), Some(40.0)]), Some(false));
        // PaCO2 60 以上: 60.0 meets it, 59.9 does not.
        assert_eq!(a.judge(&[Some(80.0), Some(60.0)]), Some(true));
        assert_eq!(a.judge(&[Some(80.0), Some(59.9)]), Some(false));
    }

    #[test]
    fn a_missing_value_is_unknown_never_false() {
        let a = c("sev_resp_blood_gas");
        assert_eq!(a.judge(&[None, Some(40.0)]), None);
        assert_eq!(a.judge(&[Some(80.0), None]), None);
        assert_eq!(a.judge(&[None, None]), None);
        // One present abnormal item decides, whatever is missing.
        assert_eq!(a.judge(&[None, Some(61.0)]), Some(true));
        assert_eq!(a.judge(&[Some(50.0), None]), Some(true));
        // Fewer values than items is missing too.
        assert_eq!(a.judge(&[Some(80.0)]), None);
    }

    #[test]
    fn renal_any_of_three() {
        let e = c("sev_renal_lab");
        assert_eq!(e.judge(&[Some(10.0), Some(7.99), Some(79.9)]), Some(false));
        assert_eq!(e.judge(&[Some(9.9), Some(1.0), Some(20.0)]), Some(true));
        assert_eq!(e.judge(&[Some(50.0), Some(8.0), Some(20.0)]), Some(true));
        assert_eq!(e.judge(&[Some(50.0), Some(1.0), Some(80.0)]), Some(true));
        assert_eq!(e.judge(&[Some(50.0), None, Some(20.0)]), None);
    }

    #[test]
    fn hepatic_albumin_bands_follow_g_table() {
        let ab = c("sev_liver_albumin_abnormal");
        let hi = c("sev_liver_albumin_high");
        for (x, abnormal, high) in [
            (3.8, false, false),
            (3.79, true, false),
            (2.8, true, false),
            (2.79, false, true),
            (1.5, false, true),
        ] {
            assert_eq!(ab.judge(&[Some(x)]), Some(abnormal), "abnormal at {x}");
            assert_eq!(hi.judge(&[Some(x)]), Some(high), "high at {x}");
        }
        assert_eq!(ab.judge(&[None]), None);
    }

    #[test]
    fn bilirubin_and_platelets_edges() {
        let b = c("sev_liver_bilirubin_abnormal");
        let bh = c("sev_liver_bilirubin_high");
        assert_eq!(b.judge(&[Some(0.99)]), Some(false));
        assert_eq!(b.judge(&[Some(1.0)]), Some(true));
        assert_eq!(b.judge(&[Some(5.0)]), Some(false));
        assert_eq!(bh.judge(&[Some(5.0)]), Some(true));
        assert_eq!(bh.judge(&[Some(4.99)]), Some(false));
        let i3 = c("sev_blood_platelets_low");
        let k2 = c("sev_bleeding_platelets_low");
        assert_eq!(i3.judge(&[Some(1.0)]), Some(false));
        assert_eq!(i3.judge(&[Some(0.9)]), Some(true));
        assert_eq!(k2.judge(&[Some(3.0)]), Some(false));
        assert_eq!(k2.judge(&[Some(2.9)]), Some(true));
        let hb = c("sev_blood_hemoglobin_low");
        assert_eq!(hb.judge(&[Some(6.0)]), Some(false));
        assert_eq!(hb.judge(&[Some(5.9)]), Some(true));
    }

    #[test]
    fn every_criterion_fits_the_item_bound() {
        for c in CRITERIA {
            assert!(
                !c.items.is_empty() && c.items.len() <= MAX_ITEMS,
                "{}",
                c.column
            );
        }
    }
}
