-- Patients of the ALS registry with a visit in the fiscal year. / 当該年度に受診記録のある ALS 登録患者数
SELECT COUNT(DISTINCT pid) AS n
FROM als_visit
WHERE fiscal_year = {fy}
