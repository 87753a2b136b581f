-- Patients by designated disease. / 疾病別患者数
SELECT disease_no, COUNT(DISTINCT pid) AS n
FROM nanbyo_survey
WHERE fiscal_year = {fy}
GROUP BY disease_no
