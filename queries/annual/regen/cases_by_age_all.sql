-- Registered cases by 5-year age band at treatment, all products. / 年齢階級別登録症例数（全製品）
SELECT age_band, COUNT(DISTINCT pid) AS n
FROM regen_treatment
WHERE fiscal_year = {fy}
GROUP BY age_band
