-- Patients by sex, all diseases. / 男女別患者数（全疾病）
SELECT p.sex, COUNT(DISTINCT s.pid) AS n
FROM nanbyo_survey AS s
JOIN patient AS p ON p.pid = s.pid
WHERE s.fiscal_year = {fy}
GROUP BY p.sex
