-- Patients by 5-year age band at the survey, all diseases. / 年齢階級別患者数（全疾病）
SELECT age_band, COUNT(DISTINCT pid) AS n
FROM nanbyo_survey
WHERE fiscal_year = {fy}
GROUP BY age_band
