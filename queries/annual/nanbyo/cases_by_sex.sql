-- Patients by designated disease and sex. / 疾病別・男女別患者数
SELECT s.disease_no, p.sex, COUNT(DISTINCT s.pid) AS n
FROM nanbyo_survey AS s
JOIN patient AS p ON p.pid = s.pid
WHERE s.fiscal_year = {fy}
GROUP BY s.disease_no, p.sex
