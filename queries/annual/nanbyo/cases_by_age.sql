-- Patients by designated disease and 5-year age band at the survey. / 疾病別・年齢階級別患者数
SELECT disease_no, age_band, COUNT(DISTINCT pid) AS n
FROM nanbyo_survey
WHERE fiscal_year = {fy}
GROUP BY disease_no, age_band
