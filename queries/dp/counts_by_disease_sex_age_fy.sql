-- DP 版：指定難病の受給者数（告示番号 × 性別 × 調査時年齢 5 歳階級 × 年度）
-- DP version: patients per designated disease × sex × 5-year age band × fiscal year.
-- Every key is public-domain, so every cell of the domain is released (noisy zeros
-- included). A patient appears in up to 11 fiscal years: pass max_groups_per_patient = 11
-- to keep them all (more noise), or keep the default L = 5 (fewer groups per patient).
SELECT
    s.disease_no,
    p.sex,
    s.age_band,
    s.fiscal_year,
    count(DISTINCT s.pid) AS patients
FROM nanbyo_survey AS s
JOIN patient AS p ON p.pid = s.pid
GROUP BY s.disease_no, p.sex, s.age_band, s.fiscal_year
ORDER BY s.disease_no, p.sex, s.age_band, s.fiscal_year
